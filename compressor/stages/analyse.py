"""The `analyse` stage: importance of every head, FFN neuron and tensor, and a pruning plan under a budget.

Output directory: sensitivity.json, heatmap.png, plan.json (with a budget), latency_table.json (latency budgets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compressor.checkpoint import load_model, read_config, resolve_model_path
from compressor.errors import ConfigError
from compressor.fs import atomic_dir
from compressor.sensitivity.config import AnalyseConfig, needs_data
from compressor.stages.base import Context, StageBase, StageView
from compressor.stages.context import model_labels, model_task


def load_for_scoring(ctx: Context, *, labelled: bool) -> tuple[Any, Any, Any]:
    """(model, tokenizer, training rows mapped to the model's labels, or None) for a stage that scores the model."""
    config = read_config(resolve_model_path(ctx.model))
    data = ctx.data.train(model_labels(config), task=model_task(config)) if labelled else None
    if data is None:
        return (*load_model(ctx.model), None)
    model, tokenizer = load_model(ctx.model, num_labels=data.num_labels, id2label=data.id2label)
    return model, tokenizer, data


class AnalyseStage(StageBase):
    key = "analyse"
    config_cls = AnalyseConfig
    output = "analysis"
    gives = "plan"
    example = "- analyse: {scorer: fisher, budget: flops=0.5, samples: 512}"

    def data(self, config: AnalyseConfig) -> dict[str, bool]:
        return {"train": True} if needs_data(config.scorer) else {}

    def run(self, ctx: Context, config: AnalyseConfig) -> dict[str, Any]:
        from compressor.sensitivity.analyse import analyse

        scored = bool(self.data(config))
        if scored and ctx.data.path("train") is None:
            raise ConfigError(f"scorer `{config.scorer}` needs labelled data; pass --data (or use --scorer magnitude)")
        model, tokenizer, data = load_for_scoring(ctx, labelled=scored)
        report = analyse(model, config, tokenizer=tokenizer, data=data)
        with atomic_dir(ctx.out) as tmp:
            names = report.save(tmp)
        report.paths = {key: ctx.out / path.name for key, path in names.items()}
        return report.summary() | {"table": report.table()}

    def row(self, summary: dict[str, Any]) -> dict[str, str]:
        predicted = ((summary.get("plan") or {}).get("predicted") or {}).get("params")
        kept = f"plan keeps {predicted['fraction']:.1%} of encoder params" if predicted else "no plan"
        return {"params": "-", "accuracy": "-", "note": f"{summary.get('scorer')}, {summary.get('budget')}; {kept}"}

    def describe(self, summary: dict[str, Any]) -> str:
        return self.row(summary)["note"]

    def sections(self, view: StageView) -> list[tuple[str, list[Any]]]:
        if not view.done:
            return []
        summary = view.summary
        text = f"Scorer `{summary.get('scorer')}`, budget `{summary.get('budget')}`"
        plan = summary.get("plan") or {}
        predicted = (plan.get("predicted") or {}).get("params")
        if predicted:
            text += (
                f"; the plan keeps {predicted['after']:,} of {predicted['before']:,} encoder parameters "
                f"({predicted['fraction']:.1%})"
            )
        if plan.get("dropped_layers"):
            text += f" and drops layers {plan['dropped_layers']}"
        table = summary.get("table") or {}
        blocks: list[Any] = [("img", (Path(view.out) / "heatmap.png", "sensitivity heatmap")), ("p", text + ".")]
        if table.get("rows"):
            blocks.append(("table", (table["headers"], table["rows"])))
        return [("Sensitivity", blocks)]
