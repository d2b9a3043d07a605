"""`run_pipeline`: a recipe's stages, one directory each, resumable; then the report.

A run directory (see `compressor.rundir` for what each stage directory holds):

    recipe.json              the resolved recipe (every default filled in)
    run.json                 the stage directories of the last run, in order, and how each one went
    01-finetune/             stage.json, adapter/, DONE
    02-merge/ …              stage.json, model/, DONE
    report.md, report.html

`resume=True` skips a stage whose DONE exists and whose config hash and input hashes are unchanged; from the first
stage that runs, every later stage runs too. A stage interrupted (Ctrl-C) has no DONE, so a resume redoes it; an
interrupted fine-tune continues from its last Trainer checkpoint when its config and inputs are unchanged.
The benchmark's baselines (dense fp32 and int8 exports of the unpruned model) are stages of their own, placed
right before the model is pruned.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.errors import ConfigError
from compressor.fs import check_out_dir
from compressor.recipe import Recipe, apply_overrides, load_recipe, parse_recipe
from compressor.recipe_text import PLAN_FROM_ANALYSE
from compressor.rundir import RECIPE_FILE, Run, StageRun
from compressor.schema import config_to_dict, save_json

logger = logging.getLogger(__name__)

BENCHMARK_JSON = "benchmark.json"
PLOT_FILE = "accuracy_latency.png"


@dataclass
class RunResult:
    """What `run_pipeline` did: every stage (in order), the benchmark rows and the report files."""

    out_dir: Path
    recipe: Recipe
    stages: list[StageRun]
    report_md: Path
    report_html: Path
    artifact: Path | None = None  # the final artifact, when the recipe exports

    def stage(self, name: str) -> StageRun | None:
        return next((s for s in self.stages if s.name == name), None)


class Data:
    """The recipe's data, loaded on first use: a seeded training sample and the validation set."""

    def __init__(self, spec: Any, run: Run) -> None:
        self.spec, self.run = spec, run
        self._train: Any = None
        self._eval: Any = None

    def train(self) -> Any:
        from compressor.data import load_data

        if self._train is None:
            full = load_data(self.spec.train, **self.spec.columns)
            self._train = full.sample(self.spec.max_train_samples, seed=self.spec.seed)
        return self._train

    def eval(self) -> Any:
        from compressor.data import load_data

        if self._eval is None and self.spec.eval is not None:
            id2label = self.train().id2label if self.spec.train is not None else None
            self._eval = load_data(self.spec.eval, id2label=id2label, **self.spec.columns)
        return self._eval

    def hashes(self, *which: str) -> dict[str, str]:
        """Content hashes of the data files a stage reads (`train`, `eval`), as stage inputs."""
        return {f"data.{w}": self.run.external(getattr(self.spec, w)) for w in which if getattr(self.spec, w)}

    def settings(self) -> dict[str, Any]:
        return config_to_dict(self.spec)["fields"]


def run_pipeline(
    recipe: Recipe | str | Path,
    out_dir: Path,
    *,
    resume: bool = False,
    overrides: list[str] | None = None,
    force: bool = False,
    quiet: bool = False,
) -> RunResult:
    """Run a recipe's stages into `out_dir` (one directory per stage), then write report.md and report.html.

    Args:
        recipe: a `Recipe`, or the path of a recipe YAML file.
        resume: keep the stages of an earlier run of `out_dir` whose config and inputs are unchanged.
        overrides: `stage.key=value` items applied before validation (`--set`).
        force: replace a non-empty `out_dir` (without `resume`).
    """
    from compressor.report import write_report

    recipe = _resolve_recipe(recipe, overrides)
    out_dir = Path(out_dir)
    if not resume:
        if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
            raise ConfigError(
                f"--out `{out_dir}` exists and is not empty; pass --resume to continue that run, "
                "--force to replace it, or choose another path"
            )
        check_out_dir(out_dir, force=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_json(out_dir / RECIPE_FILE, recipe.to_dict() | {"source": str(recipe.source) if recipe.source else None})

    run = Run(out_dir, resume=resume)
    data = Data(recipe.data, run)
    model = recipe.model  # the current checkpoint: `minilm` or a directory
    model_in = {"model": run.external(model)}
    adapter_in: dict[str, str] = {}
    plan_in: dict[str, str] = {}
    plan_path: Path | None = None
    history: list[dict[str, Any]] = []  # earlier stages' configs, carried into the artifact manifest
    adapter_dir: Path | None = None
    artifacts: dict[str, StageRun] = {}  # what the benchmark compares, by display name
    export_spec = recipe.stage("export")
    bench_spec = recipe.stage("benchmark")

    for spec in recipe.stages:
        if spec.kind in ("prune", "export") and bench_spec is not None and not artifacts:
            # Baselines: the unpruned model exported dense, as fp32 and as int8 (same export settings otherwise).
            for baseline in bench_spec.baselines:
                quantize = (
                    "none"
                    if baseline == "fp32"
                    else (export_spec.config.quantize if export_spec.config.quantize != "none" else "dynamic")
                )
                cfg = dataclasses.replace(export_spec.config, quantize=quantize)
                stage = _export(run, f"dense-{baseline}", cfg, model, model_in, data, history, quiet=quiet)
                artifacts[f"dense {baseline}"] = stage

        if spec.kind == "analyse":
            from compressor.sensitivity.analyse import PLAN_FILE

            needs_data = spec.config.scorer != "magnitude"
            config = {
                "analyse": config_to_dict(spec.config),
                "model": model,
                "data": data.settings() if needs_data else None,
            }
            stage = run.begin("analyse", "analyse", config, model_in | (data.hashes("train") if needs_data else {}))
            if not stage.done:
                from compressor.checkpoint import load_model
                from compressor.sensitivity.analyse import analyse

                train = data.train() if needs_data else None
                labels = {} if train is None else {"num_labels": train.num_labels, "id2label": train.id2label}
                net, tokenizer = load_model(model, **labels)
                report = analyse(net, tokenizer, spec.config, data=train, out_dir=stage.out)
                run.finish(
                    stage,
                    {
                        "scorer": spec.config.scorer,
                        "budget": spec.config.budget,
                        "predicted": None if report.plan is None else report.plan.predicted,
                    },
                )
            plan_path = stage.out / PLAN_FILE
            plan_in = {"analyse": stage.output_hash}

        elif spec.kind == "finetune":
            config = {
                "method": spec.method,
                "options": config_to_dict(spec.options),
                "train": config_to_dict(spec.train),
                "model": model,
                "data": data.settings(),
            }
            stage = run.begin("finetune", "finetune", config, model_in | data.hashes("train", "eval"))
            if not stage.done:
                from compressor.finetune import finetune

                report = finetune(
                    model,
                    spec.method,
                    spec.options,
                    spec.train,
                    data=data.train(),
                    eval_data=data.eval(),
                    out_dir=stage.out,
                    resume=stage.status == "resumed",
                    force=True,
                    quiet=quiet,
                )
                run.finish(
                    stage,
                    {
                        "method": spec.method,
                        "accuracy": report.metrics.get("eval_accuracy"),
                        "params": report.total,
                        "trainable": report.trainable,
                        "metrics": report.metrics,
                    },
                )
            adapter_dir, adapter_in = stage.out, {"finetune": stage.output_hash}
            history.append(
                {
                    "stage": "finetune",
                    "method": spec.method,
                    "options": config_to_dict(spec.options),
                    "train": config_to_dict(spec.train),
                }
            )

        elif spec.kind == "merge":
            stage = run.begin("merge", "merge", {"atol": spec.atol}, adapter_in)
            if not stage.done:
                from compressor.merge import merge_run

                report = merge_run(adapter_dir, stage.out, force=True, atol=spec.atol)
                run.finish(
                    stage, {"method": report.method, "max_abs_diff": report.max_abs_diff, "params": report.parameters}
                )
            model, model_in = str(stage.out), {"merge": stage.output_hash}
            history.append({"stage": "merge", "atol": spec.atol})

        elif spec.kind == "prune":
            from_plan = spec.config.plan == PLAN_FROM_ANALYSE
            config = {
                "prune": config_to_dict(spec.config),
                "vocab": spec.vocab,
                "model": model,
                "data": data.settings(),
            }
            uses_train = spec.config.recover != "none" or spec.vocab
            inputs = (
                model_in | (plan_in if from_plan else {}) | data.hashes(*(["train"] if uses_train else []), "eval")
            )
            if spec.config.plan is not None and not from_plan:
                inputs["plan"] = run.external(spec.config.plan)
            stage = run.begin("prune", "prune", config, inputs)
            if not stage.done:
                from compressor.prune.io import prune_checkpoint

                cfg = dataclasses.replace(spec.config, plan=str(plan_path)) if from_plan else spec.config
                train_file = Path(recipe.data.train) if recipe.data.train else None
                report = prune_checkpoint(
                    model,
                    stage.out,
                    cfg,
                    data=train_file if uses_train else None,
                    eval_data=Path(recipe.data.eval) if recipe.data.eval else None,
                    vocab=train_file if spec.vocab else None,
                    columns=recipe.data.columns,
                    force=True,
                    quiet=quiet,
                )
                run.finish(
                    stage,
                    {
                        "accuracy": report.get("eval_accuracy"),
                        "params": report["params_after"],
                        "params_before": report["params_before"],
                        "structure": report["structure"],
                        "encoder_params_before": report["encoder_params_before"],
                        "encoder_params_after": report["encoder_params_after"],
                        "recovery": report.get("recovery"),
                        "vocab": report.get("vocab"),
                    },
                )
            model, model_in = str(stage.out), {"prune": stage.output_hash}
            history.append({"stage": "prune", "config": config_to_dict(spec.config), "vocab": spec.vocab})

        elif spec.kind == "export":
            stage = _export(run, "export", spec.config, model, model_in, data, history, quiet=quiet)
            precision = "fp32" if spec.config.quantize == "none" else "int8"
            artifacts[f"{'compressed' if recipe.stage('prune') else 'result'} {precision}"] = stage

        elif spec.kind == "benchmark":
            names = list(artifacts)
            config = {
                "benchmark": config_to_dict(spec.config),
                "baselines": spec.baselines,
                "plot": spec.plot,
                "artifacts": names,
                "data": data.settings(),
            }
            inputs = {name: s.output_hash for name, s in artifacts.items()} | data.hashes("eval")
            stage = run.begin("benchmark", "benchmark", config, inputs)
            if not stage.done:
                from exporters.measure import benchmark, plot

                report = benchmark([artifacts[n].out for n in names], spec.config, data=data.eval())
                for result, name in zip(report.results, names, strict=True):
                    result.name = name
                stage.out.mkdir(parents=True, exist_ok=True)
                report.write_json(stage.out / BENCHMARK_JSON)
                if spec.plot and data.eval() is not None:
                    plot(report, stage.out / PLOT_FILE)
                run.finish(stage, {"rows": [_row(r) for r in report.results], "machine": report.machine})

    run.write_index(recipe.name)
    md, html = write_report(out_dir)
    export_stage = next((s for s in run.stages if s.name == "export"), None)
    return RunResult(out_dir, recipe, run.stages, md, html, None if export_stage is None else export_stage.out)


def _export(
    run: Run,
    name: str,
    cfg: Any,
    model: str,
    model_in: dict[str, str],
    data: Data,
    history: list[dict[str, Any]],
    *,
    quiet: bool,
) -> StageRun:
    """One export stage (the result, or a dense baseline): checkpoint → artifact directory."""
    config = {"export": config_to_dict(cfg), "model": model, "data": data.settings()}
    stage = run.begin(name, "export", config, model_in | data.hashes("eval"))
    if not stage.done:
        from compressor.checkpoint import load_model
        from exporters.onnx.export import export_onnx

        net, tokenizer = load_model(model)
        source = {"model": model, "sha256": next(iter(model_in.values()))}
        report = export_onnx(
            net, tokenizer, cfg, out_dir=stage.out, eval_data=data.eval(), source=source, stages=list(history)
        )
        manifest, accuracy = report.manifest, report.accuracy or {}
        run.finish(
            stage,
            {
                "accuracy": accuracy.get("final"),
                "accuracy_samples": accuracy.get("samples"),
                "params": manifest["params"]["total"],
                "model_bytes": report.model_bytes,
                "quantize": report.quantize,
                "fusion": report.fusion_choice,
                "p50_ms": manifest["latency"].get("p50_ms"),
                "excluded_nodes": len(report.excluded_nodes),
            },
        )
    return stage


def _row(result: Any) -> dict[str, Any]:
    """One benchmark result, flattened for the report."""
    return {
        "name": result.name,
        "path": result.path,
        "accuracy": result.accuracy,
        "eval_rows": result.eval_rows,
        "p50_ms": result.fixed.p50,
        "p90_ms": result.fixed.p90,
        "p99_ms": result.fixed.p99,
        "throughput": result.fixed.throughput,
        "model_bytes": result.model_bytes,
        "speedup_p50": result.speedup_p50,
        "size_ratio": result.size_ratio,
        "accuracy_delta": result.accuracy_delta,
    }


def _resolve_recipe(recipe: Recipe | str | Path, overrides: list[str] | None) -> Recipe:
    if not isinstance(recipe, Recipe):
        return load_recipe(recipe, overrides)
    if not overrides:
        return recipe
    raw = recipe.to_dict()
    base = recipe.source.parent if recipe.source else Path.cwd()
    parsed = parse_recipe(apply_overrides(raw, overrides), base_dir=base, source=str(recipe.source or "recipe"))
    parsed.source = recipe.source
    return parsed
