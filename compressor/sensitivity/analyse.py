"""The `analyse` verb: score every head, FFN neuron and tensor, allocate a budget, write the report."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.arch.parts import arch_of, max_tokens, model_inputs, to_device
from compressor.arch.surgery import drop_layers_
from compressor.errors import ConfigError
from compressor.schema import config_to_dict, save_json
from compressor.sensitivity.allocate import allocate, kept_layers
from compressor.sensitivity.config import AnalyseConfig
from compressor.sensitivity.cost import LayerShape, layer_shapes
from compressor.sensitivity.latency import LatencyTable, latency_table
from compressor.sensitivity.masks import Batch, hidden_importance, hidden_magnitude, make_batches
from compressor.sensitivity.plan import Plan, fingerprint
from compressor.sensitivity.scorers import SCORERS, Scores, run_scorer
from compressor.sensitivity.view import save_heatmap, sensitivity_dict, table_rows

logger = logging.getLogger(__name__)

SENSITIVITY_FILE = "sensitivity.json"
HEATMAP_FILE = "heatmap.png"
PLAN_FILE = "plan.json"
LATENCY_FILE = "latency_table.json"


@dataclass
class AnalyseReport:
    """Scores, the plan (None without a budget) and where the files went."""

    config: AnalyseConfig
    scores: Scores
    shapes: list[LayerShape]
    plan: Plan | None = None
    latency: LatencyTable | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)  # the fingerprint of the model scored
    num_heads: int = 0

    def save(self, out_dir: Path) -> dict[str, Path]:
        """Write sensitivity.json, heatmap.png, plan.json (with a budget) and the latency table into `out_dir`."""
        names = {"sensitivity": SENSITIVITY_FILE, "heatmap": HEATMAP_FILE}
        config = config_to_dict(self.config)
        save_json(
            out_dir / SENSITIVITY_FILE,
            sensitivity_dict(self.scores, self.shapes, self.plan, config=config, model=self.model),
        )
        save_heatmap(out_dir / HEATMAP_FILE, self.scores, self.shapes, self.plan, num_heads=self.num_heads)
        if self.plan is not None:
            self.plan.save(out_dir / PLAN_FILE)
            names["plan"] = PLAN_FILE
        if self.latency is not None:
            save_json(out_dir / LATENCY_FILE, self.latency.to_dict())
            names["latency"] = LATENCY_FILE
        return {key: out_dir / name for key, name in names.items()}

    def table(self) -> dict[str, Any]:
        """The per-layer table of the scores and the plan (title, headers, rows, caption)."""
        return table_rows(self.scores, self.shapes, self.plan)

    def summary(self) -> dict[str, Any]:
        """What `compressor analyse --json` prints."""
        return {
            "scorer": self.scores.scorer,
            "budget": self.config.budget,
            "loss": self.scores.loss,
            "layers": [
                {"layer": s.index, "source": s.source, "heads": s.heads, "neurons": s.neurons} for s in self.shapes
            ],
            "plan": None
            if self.plan is None
            else {
                "layers": self.plan.summary(),
                "predicted": self.plan.predicted,
                "dropped_layers": self.plan.dropped_layers,
            },
            "paths": {k: str(v) for k, v in self.paths.items()},
            "seconds": round(self.seconds, 2),
        }


def analyse(
    model: nn.Module,
    config: AnalyseConfig,
    *,
    tokenizer: Any = None,
    data: Any = None,
    device: torch.device | str | None = None,
) -> AnalyseReport:
    """Score the model's heads, FFN neurons and tensors; turn the scores into a plan under the budget.

    Args:
        data: a LabelledData for every scorer but `magnitude`; `config.samples` examples are drawn with `seed`.
    """
    start = time.perf_counter()
    model = to_device(model, device)
    refusal = arch_of(model).width_refusal
    if config.hidden < 1 and refusal:  # before any scoring: prune would refuse the plan's width cut anyway
        raise ConfigError(f"`hidden` below 1: width pruning is not supported for {model.config.model_type}: {refusal}")
    shapes = layer_shapes(model)  # scoring reads the model, it does not change its shape
    keep_count = config.keep_layers if config.depth is None else max(1, round(config.depth * len(shapes)))
    if config.parsed_budget is not None:  # the layers the choice names exist, before any scoring
        kept_layers(config.layer_choice, len(shapes), keep_count)
    scorer = SCORERS.get(config.scorer)
    batches = None
    if scorer.needs_data:
        if data is None:
            raise ConfigError(f"scorer `{config.scorer}` needs labelled data; pass --data (or use --scorer magnitude)")
        batches = make_batches(
            tokenizer,
            data,
            samples=config.samples,
            seq_len=_max_tokens(model, config.seq_len),
            batch_size=config.batch_size,
            seed=config.seed,
            num_labels=int(model.config.num_labels),
            inputs=model_inputs(model),
        )
        logger.info("scoring with %s on %d examples", config.scorer, sum(len(b["labels"]) for b in batches))
    scores = run_scorer(config.scorer, model, batches, config)
    budget = config.parsed_budget
    latency = None
    if budget is not None and budget.metric == "latency":
        cache = Path(config.latency_cache).expanduser() if config.latency_cache else None
        latency = latency_table(model, seq_len=config.seq_len, threads=config.threads, cache_dir=cache)
    hidden = None
    if config.hidden < 1:  # width: the dimensions of the residual stream that matter least go first
        importance = hidden_importance(model, batches) if batches else hidden_magnitude(model)
        scores.hidden = importance
        keep = max(1, round(config.hidden * len(importance)))
        hidden = sorted(torch.argsort(importance, descending=True, stable=True)[:keep].tolist())
    plan = None
    if budget is not None:
        options = dict(
            seq_len=config.seq_len,
            min_heads=config.min_heads,
            min_neurons=config.min_neurons,
            latency=latency,
            hidden=hidden,
        )
        plan = allocate(
            model,
            scores,
            budget,
            allow_layer_drop=config.allow_layer_drop,
            keep_layers=keep_count,
            layer_choice=config.layer_choice,
            **options,
        )
        if config.rescore and plan.dropped_layers:
            kept = plan.kept_layers
            scores = rescore_kept(model, scores, kept, batches, config)
            only_kept = replace(  # the dropped layers' first scores must not weigh in a kind's balance (_values)
                scores,
                heads=[h if i in kept else torch.zeros_like(h) for i, h in enumerate(scores.heads)],
                neurons=[n if i in kept else torch.zeros_like(n) for i, n in enumerate(scores.neurons)],
            )
            plan = allocate(
                model, only_kept, budget, keep_layers=len(kept), layer_choice=",".join(map(str, kept)), **options
            )
    report = AnalyseReport(config=config, scores=scores, shapes=shapes, plan=plan, latency=latency)
    report.model = fingerprint(model) | {"name_or_path": str(getattr(model.config, "_name_or_path", "") or "")}
    report.num_heads = arch_of(model).num_heads(model.config)
    report.seconds = time.perf_counter() - start
    return report


def rescore_kept(
    model: nn.Module, scores: Scores, kept: list[int], batches: list[Batch] | None, config: AnalyseConfig
) -> Scores:
    """`scores` with the heads and neurons of layers `kept` scored again in a copy of the model that has only those
    layers: their importance in the network the plan leaves, where a kept top layer now feeds the classifier
    directly (in the full model the teacher's last layers score lowest, and a plan starves them). The dropped
    layers keep their first scores (the report shows why they went; analyse gives the allocator zeros there);
    the per-tensor scores and the loss stay those of the full model."""
    reduced = copy.deepcopy(model)  # the caller's model is left whole: prune applies the plan to it
    drop_layers_(reduced, kept)
    again = run_scorer(config.scorer, reduced, batches, config)
    logger.info(
        "scored again without layers %s: loss %s (full model %s)",
        ",".join(str(i) for i in range(len(scores.heads)) if i not in kept),
        _loss_text(again.loss),
        _loss_text(scores.loss),
    )
    heads, neurons = list(scores.heads), list(scores.neurons)
    for position, layer in enumerate(kept):
        heads[layer], neurons[layer] = again.heads[position], again.neurons[position]
    return replace(scores, heads=heads, neurons=neurons, joint_scale=again.joint_scale)


def _loss_text(loss: float | None) -> str:
    return "n/a" if loss is None else f"{loss:.4f}"


def _max_tokens(model: nn.Module, seq_len: int) -> int:
    """Truncation length: `seq_len`, but never past the model's position embeddings."""
    return min(seq_len, max_tokens(model) or seq_len)
