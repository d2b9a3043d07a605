"""The `export` stage: a checkpoint → a checked ONNX artifact (fp32 parity, fusion kept only when faster, int8
behind an accuracy gate, sparse storage), with its manifest. Repeatable: a recipe exports its dense baselines and
its result under distinct names, and a benchmark compares them all."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from compressor.checkpoint import load_model, model_fingerprint, read_config, resolve_model_path
from compressor.data import load_data
from compressor.errors import ConfigError
from compressor.schema import build_strict
from compressor.stages.base import Context, StageBase, score_fields
from compressor.stages.context import model_labels, model_task, resolve_path
from exporters.onnx.config import ExportConfig


class ExportStage(StageBase):
    key = "export"
    config_cls = ExportConfig
    output = "artifact"
    gives = "artifact"
    repeatable = True
    path_keys: ClassVar[dict[str, tuple[str, ...]]] = {"calibration_data": ()}
    example = "- export: {name: compressed-int8, quantize: dynamic, eval_samples: 500}"

    def data(self, config: ExportConfig) -> dict[str, bool]:
        return {"eval": False} | ({"train": False} if config.quantize == "static" else {})

    def parse(self, values: dict[str, Any], *, source: str, base_dir: Path) -> ExportConfig:
        values = dict(values)
        if isinstance(values.get("calibration_data"), str):
            path = resolve_path(values["calibration_data"], base_dir)
            if not path.exists():
                raise ConfigError(f"{source}: calibration_data `{values['calibration_data']}` not found (`{path}`)")
            values["calibration_data"] = str(path.resolve())
        return build_strict(ExportConfig, values, source)

    def run(self, ctx: Context, config: ExportConfig) -> dict[str, Any]:
        from exporters.onnx.export import export_onnx

        path = resolve_model_path(ctx.model)
        labels = model_labels(read_config(path))
        task = model_task(read_config(path))
        model, tokenizer = load_model(ctx.model)
        calibration = None
        if config.quantize == "static":
            if config.calibration_data is not None:
                calibration = load_data(config.calibration_data, require_labels=False).texts
            elif ctx.data.path("train") is not None:
                calibration = ctx.data.train(labels, task=task).texts
        source = {"model": str(ctx.model), "path": str(path), "weights_sha256_16": model_fingerprint(path)}
        report = export_onnx(
            model,
            config,
            tokenizer=tokenizer,
            out_dir=ctx.out,
            eval_data=ctx.data.eval(labels, task=task),
            calibration_texts=calibration,
            source=source,
            stages=list(ctx.history),
        )
        manifest, accuracy = report.manifest, report.accuracy or report.regression or {}
        regression = {}
        if report.regression is not None:  # the final graph's pearson (the score), spearman and mse; fp32's too
            regression = score_fields(report.regression["final"]) | {"regression_fp32": report.regression["fp32"]}
        return {
            "accuracy": None if report.regression else accuracy.get("final"),
            "accuracy_fp32": None if report.regression else accuracy.get("fp32"),
            "accuracy_samples": accuracy.get("samples"),
            **regression,
            "task": manifest.get("task"),
            "params": manifest["params"]["total"],
            "model_bytes": report.model_bytes,
            "quantize": report.quantize,
            "fusion": report.fusion_choice,
            "timings_ms": report.timings_ms,
            "p50_ms": manifest["latency"].get("p50_ms"),
            "parity_max_abs_diff": report.parity_max_abs_diff,
            "agreement": report.agreement,
            "excluded_nodes": report.excluded_nodes,
        }

    def row(self, summary: dict[str, Any]) -> dict[str, str]:
        cells = super().row(summary)
        if cells["accuracy"] != "-" and summary.get("accuracy_samples"):
            cells["accuracy"] += f" ({summary['accuracy_samples']} rows)"
        size = summary.get("model_bytes")
        cells["note"] = f"{summary.get('quantize')}, {summary.get('fusion')} graph" + (
            f", {size / 1e6:.1f} MB" if size else ""
        )
        return cells

    def describe(self, summary: dict[str, Any]) -> str:
        agreement = summary.get("agreement")
        gate = "" if agreement is None else f", int8 agrees with fp32 on {100 * agreement:.1f}%"
        if agreement is not None and summary.get("task") == "regression":  # the gate's R² against fp32's scores
            gate = f", int8 scores R² {agreement:.4f} against fp32's"
        excluded = summary.get("excluded_nodes") or []
        kept = f", {len(excluded)} nodes kept fp32" if excluded else ""
        timings = ", ".join(f"{k} {v:.2f} ms" for k, v in (summary.get("timings_ms") or {}).items())
        return (
            f"{summary.get('model_bytes', 0) / 1e6:.1f} MB, {summary.get('quantize')}, {summary.get('fusion')} graph"
            f"; {timings}; parity {summary.get('parity_max_abs_diff', 0):.1g}{gate}{kept}"
        )
