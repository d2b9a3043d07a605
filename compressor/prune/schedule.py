"""Iterative pruning: reach the target in k steps, recovering between them.

Fractions (`heads`, `ffn`) follow a schedule of the kept share per layer: `geometric` keeps the same share of what
is left at every step (kept_t = target^(t/k)), `linear` removes the same number of units per step. A plan is made
for one model shape, so with k > 1 it is not applied unit by unit: each step re-scores the current model with the
plan's scorer and lets the allocator choose what to keep under that step's share of the plan's budget (the plan's
`min_heads`, `min_neurons` and whether it dropped layers carry over); the last step lands on the plan's predicted
cost. A latency plan is followed through its predicted FLOPs share (latency is not re-measured per step).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from compressor.errors import ConfigError
from compressor.prune.config import SCHEDULES
from compressor.prune.units import apply_plan_
from compressor.sensitivity.allocate import predict
from compressor.sensitivity.analyse import analyse
from compressor.sensitivity.config import AnalyseConfig
from compressor.sensitivity.cost import analytic_costs, layer_shapes
from compressor.sensitivity.plan import check_plan_fits

logger = logging.getLogger(__name__)


def kept_fractions(target: float, iterations: int, schedule: str) -> list[float]:
    """Share kept after each of `iterations` steps (of what there was before the first), ending at `target`."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"`schedule` must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    if not 0 <= target <= 1 or iterations < 1:
        raise ConfigError(f"kept share must be in [0, 1] and iterations >= 1; got {target!r}, {iterations!r}")
    steps = range(1, iterations + 1)
    if schedule == "geometric" and target > 0:
        shares = [target ** (t / iterations) for t in steps]
    else:  # linear, and geometric towards 0 (which a geometric series never reaches)
        shares = [1 - (1 - target) * t / iterations for t in steps]
    shares[-1] = target
    return shares


def count_schedule(n: int, removed: float, iterations: int, schedule: str) -> list[int]:
    """Units kept after each step when `removed` of `n` go in total; the last count equals one-shot pruning."""
    final = n - int(math.floor(n * removed + 1e-9))
    if n == 0:
        return [0] * iterations
    counts, previous = [], n
    for share in kept_fractions(final / n, iterations, schedule):
        previous = min(previous, max(final, round(n * share)))
        counts.append(previous)
    counts[-1] = final
    return counts


@dataclass(frozen=True)
class PlanTarget:
    """What an iterative run follows from a plan: a cost metric, the share of it kept, and the starting cost."""

    metric: str
    kept: float
    seq_len: int
    start_cost: float


def plan_target(model: nn.Module, plan: Any) -> PlanTarget:
    """The plan's kept share of encoder params or FLOPs on `model` (FLOPs standing in for a latency budget)."""
    check_plan_fits(model, plan)
    metric = plan.budget.get("metric") if plan.budget.get("metric") in ("params", "flops") else "flops"
    seq_len = int(plan.budget.get("seq_len") or 128)
    kept = float(predict(model, plan, seq_len=seq_len)[metric]["fraction"])
    return PlanTarget(metric, kept, seq_len, _cost(model, metric, seq_len))


def _cost(model: nn.Module, metric: str, seq_len: int) -> float:
    return float(analytic_costs(model, metric, seq_len=seq_len).encoder_cost(layer_shapes(model)))


def rescore_step_(
    model: nn.Module,
    plan: Any,
    target: PlanTarget,
    kept_share: float,
    *,
    tokenizer: Any,
    data: Any,
    seed: int,
) -> dict[str, Any]:
    """Re-score `model` with the plan's scorer and prune it to `kept_share` of the starting cost (one step)."""
    current = _cost(model, target.metric, target.seq_len)
    relative = min(1.0, target.start_cost * kept_share / current)
    cfg = AnalyseConfig(
        scorer=plan.scorer or "magnitude",
        budget=f"{target.metric}={relative:.9g}",
        seq_len=target.seq_len,
        min_heads=plan.min_heads,
        min_neurons=plan.min_neurons,
        allow_layer_drop=bool(plan.dropped_layers),
        seed=seed,
    )
    report = analyse(model, cfg, tokenizer=tokenizer, data=data)
    apply_plan_(model, report.plan)
    after = _cost(model, target.metric, target.seq_len)
    logger.info(
        "step kept %.3f of the starting encoder %s (scorer %s)", after / target.start_cost, target.metric, cfg.scorer
    )
    return {
        "scorer": cfg.scorer,
        "budget": cfg.budget,
        "metric": target.metric,
        "kept": round(after / target.start_cost, 6),
    }
