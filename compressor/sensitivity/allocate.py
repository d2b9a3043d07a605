"""The budget allocator: scores + one budget → a `Plan` (what each layer keeps).

Greedy knapsack by score per cost: every layer first keeps its `min_heads` best heads and `min_neurons` best
neurons; the remaining units are taken in order of score/cost (ties broken by kind, layer, index, so the result is
deterministic), skipping a unit that no longer fits and going on with cheaper ones. The kept cost therefore ends
within one FFN neuron of a params/FLOPs target. With `allow_layer_drop`, the allocator also tries dropping the k
layers with the lowest total score per cost (k = 1 … layers-1; dropped layers need no minimum and free their fixed
cost) and keeps the plan with the largest total kept score.

When a scorer's head and neuron scores are not on one scale (`Scores.joint_scale` is False: per-layer normalised
or magnitudes), each kind is rescaled so that its mean score per unit cost is 1 before the two are mixed; this
treats heads and neurons as equally valuable per parameter on average and lets the scores decide the rest.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compressor.errors import ConfigError, PruneError
from compressor.sensitivity.config import SPREAD_NEEDS_COUNT, Budget, layer_indices
from compressor.sensitivity.cost import LayerShape, UnitCosts, analytic_costs, layer_shapes
from compressor.sensitivity.latency import LatencyTable
from compressor.sensitivity.plan import LayerPlan, Plan, fingerprint
from compressor.sensitivity.scorers import Scores

logger = logging.getLogger(__name__)

KIND_ORDER = {"head": 0, "neuron": 1}


@dataclass(frozen=True)
class _Unit:
    kind: str  # "head" or "neuron"
    layer: int
    index: int
    value: float
    cost: float

    def sort_key(self) -> tuple[float, int, int, int]:
        return (-self.value / self.cost, KIND_ORDER[self.kind], self.layer, self.index)


@dataclass
class _Selection:
    kept: dict[tuple[str, int], list[int]]  # (kind, layer) → kept indices
    dropped: list[int]
    cost: float
    value: float


def budget_costs(
    model: nn.Module, budget: Budget, *, seq_len: int, latency: LatencyTable | None, width: int | None = None
) -> UnitCosts:
    """The unit costs a budget is measured in (at the model's width, or at `width` for params and FLOPs)."""
    if budget.metric == "latency":
        if latency is None:
            raise ConfigError(
                "a latency-ms budget needs a measured latency table (see compressor.sensitivity.latency)"
            )
        return latency.costs()
    return analytic_costs(model, budget.metric, seq_len=seq_len, width=width)


def _values(
    scores: Scores, shapes: list[LayerShape], costs: UnitCosts
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Non-negative, finite unit values; each kind balanced to mean value-per-cost 1 unless `joint_scale`."""
    if (
        len(scores.heads) != len(shapes)
        or len(scores.neurons) != len(shapes)
        or any(
            len(h) != s.heads or len(n) != s.neurons
            for h, n, s in zip(scores.heads, scores.neurons, shapes, strict=True)
        )
    ):
        raise PruneError("the scores do not match the model's current shape; score the model you allocate for")
    heads = [torch.nan_to_num(h.double(), nan=0.0).clamp_min(0) for h in scores.heads]
    neurons = [torch.nan_to_num(n.double(), nan=0.0).clamp_min(0) for n in scores.neurons]
    if not scores.joint_scale:
        for values, unit_cost in ((heads, costs.head), (neurons, costs.neuron)):
            total_value = float(sum(v.sum() for v in values))
            total_cost = unit_cost * sum(len(v) for v in values)
            if total_value > 0:
                for v in values:
                    v.mul_(total_cost / total_value)
    return heads, neurons


def _solve(
    units: list[list[_Unit]],
    shapes: list[LayerShape],
    costs: UnitCosts,
    target: float,
    dropped: set[int],
    min_heads: int,
    min_neurons: int,
    tolerance: float,
    slack: float,
) -> _Selection | None:
    """Greedy knapsack for one set of dropped layers; None when the per-layer minimum alone does not fit."""
    capacity = target - costs.base - sum(costs.layer for s in shapes if s.index not in dropped)
    mandatory: list[_Unit] = []
    rest: list[_Unit] = []
    for shape, layer_units in zip(shapes, units, strict=True):
        if shape.index in dropped:
            continue
        for kind, minimum in (("head", min_heads), ("neuron", min_neurons)):
            of_kind = sorted((u for u in layer_units if u.kind == kind), key=lambda u: (-u.value, u.index))
            mandatory.extend(of_kind[:minimum])
            rest.extend(of_kind[minimum:])
    used = sum(u.cost for u in mandatory)
    if used > capacity + tolerance:
        return None
    rest.sort(key=_Unit.sort_key)
    taken: list[_Unit] = []  # optional units, in the order they were taken
    used = _fill(rest, taken, used, capacity + tolerance)
    if capacity - used > slack:
        used = _repair(rest, taken, used, capacity + tolerance)
    chosen = mandatory + taken
    kept = {
        (kind, s.index): sorted(u.index for u in chosen if u.kind == kind and u.layer == s.index)
        for s in shapes
        for kind in ("head", "neuron")
    }
    total = used + costs.base + sum(costs.layer for s in shapes if s.index not in dropped)
    return _Selection(kept=kept, dropped=sorted(dropped), cost=total, value=sum(u.value for u in chosen))


def _fill(ranked: list[_Unit], taken: list[_Unit], used: float, limit: float) -> float:
    """Take units in rank order, skipping one that does not fit and going on with cheaper ones."""
    chosen = set(map(id, taken))
    for u in ranked:
        if id(u) not in chosen and used + u.cost <= limit:
            taken.append(u)
            chosen.add(id(u))
            used += u.cost
    return used


def _repair(ranked: list[_Unit], taken: list[_Unit], used: float, limit: float) -> float:
    """Close a gap no remaining unit fits into: swap the best untaken unit in for the weakest cheaper ones.

    This happens when every cheap unit (FFN neuron) is already kept and the budget stops mid-way through a head;
    without it a model whose heads are large relative to the encoder would miss the budget by up to a head.
    """
    chosen = set(map(id, taken))
    for u in ranked:  # best score per cost first
        if id(u) in chosen:
            continue
        freed, evict = 0.0, []
        for t in sorted((t for t in taken if t.cost < u.cost), key=_Unit.sort_key, reverse=True):  # weakest first
            if used - freed + u.cost <= limit:
                break
            evict.append(t)
            freed += t.cost
        if used - freed + u.cost > limit:
            continue
        out = set(map(id, evict))
        taken[:] = [t for t in taken if id(t) not in out] + [u]
        return _fill([t for t in ranked if id(t) not in out], taken, used - freed + u.cost, limit)
    return used


MAX_EXHAUSTIVE = 1000  # layer subsets searched one by one when keeping a given number of layers


def kept_layers(choice: str, count: int, keep: int | None) -> list[int] | None:
    """The layers a `layer_choice` keeps in a model of `count` layers, or None when the scores choose (score);
    `keep` (keep_layers, or depth as a count) is checked against `count` for every choice.

    spread: `keep` layers at round(i·(count − 1)/(keep − 1)), i = 0 … keep − 1 (the first and the last always,
    evenly between; one layer: the last); indices: those layers (each must exist)."""
    if keep is not None and not 1 <= keep <= count:  # whatever the choice: here, before any scoring (analyse)
        raise ConfigError(f"`keep_layers` must be between 1 and the model's {count} layers; got {keep}")
    if choice == "score":
        return None
    if choice == "spread":
        if keep is None:
            raise ConfigError(SPREAD_NEEDS_COUNT)
        if keep == 1:
            return [count - 1]
        return sorted({round(i * (count - 1) / (keep - 1)) for i in range(keep)})
    listed = layer_indices(choice)
    assert listed is not None
    outside = [i for i in listed if i >= count]
    if outside:
        raise ConfigError(
            f"`layer_choice` names layer {outside[0]} but the model has {count} layers (0 … {count - 1})"
        )
    if keep is not None and keep != len(listed):
        raise ConfigError(
            f"`layer_choice` names {len(listed)} layers but the plan keeps {keep} (`keep_layers` or `depth`); "
            "give one of them"
        )
    return listed


def drop_candidates(
    shapes: list[LayerShape],
    units: list[list[_Unit]],
    costs: UnitCosts,
    *,
    allow: bool,
    keep_layers: int | None,
    layer_choice: str = "score",
) -> list[set[int]]:
    """The sets of layers to try dropping: none; with `allow`, the k layers of lowest total value per cost for every
    k; with `keep_layers`, every way of dropping the others (or the lowest-ratio ones when there are too many).
    `layer_choice` spread or a list of indices fixes the one set instead (`kept_layers`)."""
    fixed = kept_layers(layer_choice, len(shapes), keep_layers)
    if fixed is not None:
        return [set(range(len(shapes))) - set(fixed)]
    ratio = [
        sum(u.value for u in layer_units) / max(costs.layer_cost(s.heads, s.neurons), 1e-12)
        for s, layer_units in zip(shapes, units, strict=True)
    ]
    order = sorted(range(len(shapes)), key=lambda i: (ratio[i], i))  # lowest value per cost first
    if keep_layers is not None:  # in range: kept_layers checked it
        drop = len(shapes) - keep_layers
        if math.comb(len(shapes), drop) <= MAX_EXHAUSTIVE:
            return [set(c) for c in itertools.combinations(range(len(shapes)), drop)]
        return [set(order[:drop])]
    if not allow or len(shapes) < 2:
        return [set()]
    return [set()] + [set(order[:k]) for k in range(1, len(shapes))]


def allocate(
    model: nn.Module,
    scores: Scores,
    budget: Budget,
    *,
    seq_len: int = 128,
    min_heads: int = 1,
    min_neurons: int = 1,
    allow_layer_drop: bool = False,
    latency: LatencyTable | None = None,
    hidden: list[int] | None = None,
    keep_layers: int | None = None,
    layer_choice: str = "score",
) -> Plan:
    """Choose the heads and FFN neurons to keep under `budget` (see the module docstring).

    Args:
        seq_len: sequence length the FLOPs are counted at (and the latency table was measured at).
        min_heads, min_neurons: units every kept layer keeps at least (capped at what the layer has).
        latency: the measured cost table; required for a `latency` budget, reported when given.
        hidden: the dimensions of the residual stream the plan keeps (current indices; None = all): the units
            are costed at that width, the budget is a share of the current model's cost.
        keep_layers: the plan keeps exactly this many layers; which ones is searched (every choice when there are
            at most MAX_EXHAUSTIVE of them, else the lowest value per cost go).
        layer_choice: `score` (the search above), `spread` or layer indices: which layers stay (`kept_layers`).
    """
    shapes = layer_shapes(model)
    total = budget_costs(model, budget, seq_len=seq_len, latency=latency).encoder_cost(shapes)
    if hidden is not None and budget.metric == "latency":
        raise ConfigError("a plan that narrows the hidden size needs a params or flops budget")
    width = None if hidden is None else len(hidden)
    costs = budget_costs(model, budget, seq_len=seq_len, latency=latency, width=width)
    target = budget.value * total if budget.is_fraction else budget.value
    heads, neurons = _values(scores, shapes, costs)
    units = [
        [_Unit("head", s.index, j, float(v), costs.head) for j, v in enumerate(h)]
        + [_Unit("neuron", s.index, j, float(v), costs.neuron) for j, v in enumerate(n)]
        for s, h, n in zip(shapes, heads, neurons, strict=True)
    ]
    tolerance = 1e-9 * max(total, 1.0)
    slack = 0.005 * total if budget.is_fraction else 0.005 * target  # a gap worth a repair swap
    candidates = drop_candidates(
        shapes, units, costs, allow=allow_layer_drop, keep_layers=keep_layers, layer_choice=layer_choice
    )
    best: _Selection | None = None
    for dropped in candidates:
        selection = _solve(units, shapes, costs, target, dropped, min_heads, min_neurons, tolerance, slack)
        if selection is not None and (best is None or selection.value > best.value + 1e-12 * abs(best.value)):
            best = selection
    if best is None:
        floor = (
            sum(
                costs.layer + min(min_heads, s.heads) * costs.head + min(min_neurons, s.neurons) * costs.neuron
                for s in shapes
            )
            + costs.base
        )
        need = f"{floor / total:.3f}" if budget.is_fraction else f"{floor:.2f} ms"
        raise ConfigError(
            f"`budget` {budget} is below what the per-layer minimum keeps ({need} with min_heads={min_heads}, "
            f"min_neurons={min_neurons}); raise the budget, lower --min-heads/--min-neurons or pass --allow-layer-drop"
        )
    dropped = set(best.dropped)
    layers = [
        LayerPlan(
            index=s.index,
            source=s.source,
            dropped=s.index in dropped,
            heads=[] if s.index in dropped else best.kept[("head", s.index)],
            neurons=[] if s.index in dropped else best.kept[("neuron", s.index)],
        )
        for s in shapes
    ]
    plan = Plan(
        layers=layers,
        model=fingerprint(model),
        scorer=scores.scorer,
        min_heads=min_heads,
        min_neurons=min_neurons,
        hidden=None if hidden is None else sorted(hidden),
        budget={
            "spec": str(budget),
            "metric": budget.metric,
            "value": budget.value,
            "seq_len": seq_len,
            "threads": latency.threads if latency is not None else None,
            "target": target,
        },
    )
    plan.predicted = predict(model, plan, seq_len=seq_len, latency=latency)
    logger.info("plan under %s: %s", budget, _describe(plan))
    return plan


def kept_shapes(model: nn.Module, plan: Plan) -> list[LayerShape]:
    """The layer shapes the model will have after `apply_plan_`."""
    shapes = layer_shapes(model)
    return [
        LayerShape(
            index=k,
            source=s.source,
            heads=len(e.heads),
            head_ids=tuple(s.head_ids[j] for j in e.heads),
            neurons=len(e.neurons),
        )
        for k, (s, e) in enumerate((s, e) for s, e in zip(shapes, plan.layers, strict=True) if not e.dropped)
    ]


def predict(model: nn.Module, plan: Plan, *, seq_len: int, latency: LatencyTable | None = None) -> dict[str, Any]:
    """Encoder params, FLOPs (at `seq_len`) and, given a table, latency before and after the plan."""
    before, after = layer_shapes(model), kept_shapes(model, plan)
    width = None if plan.hidden is None else len(plan.hidden)
    out: dict[str, Any] = {}
    metrics = [
        ("params", analytic_costs(model, "params"), analytic_costs(model, "params", width=width)),
        (
            "flops",
            analytic_costs(model, "flops", seq_len=seq_len),
            analytic_costs(model, "flops", seq_len=seq_len, width=width),
        ),
    ]
    if latency is not None:
        metrics.append(("latency_ms", latency.costs(), latency.costs()))
    for name, costs, narrow in metrics:
        b, a = costs.encoder_cost(before), narrow.encoder_cost(after)
        is_count = name != "latency_ms"
        out[name] = {
            "before": int(b) if is_count else round(b, 4),
            "after": int(a) if is_count else round(a, 4),
            "fraction": round(a / b, 6) if b else 1.0,
        }
    out["flops"]["seq_len"] = seq_len
    out.setdefault("latency_ms", None)
    return out


def _describe(plan: Plan) -> str:
    heads = sum(len(e.heads) for e in plan.layers if not e.dropped)
    neurons = sum(len(e.neurons) for e in plan.layers if not e.dropped)
    p = plan.predicted["params"]
    text = f"{heads} heads, {neurons} FFN neurons, params {p['fraction']:.3f} of the encoder"
    if plan.hidden is not None:
        text += f", hidden {len(plan.hidden)}/{plan.model['hidden_size']}"
    if plan.dropped_layers:
        text += f", layers dropped {plan.dropped_layers}"
    return text
