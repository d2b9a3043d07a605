"""The `prune` stage: heads and FFN neurons removed physically (by fractions or a plan), optional recovery and
vocabulary pruning → a smaller checkpoint (`model.safetensors` + config.json with `compressor_structure`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

from compressor.checkpoint import load_model, resolve_model_path, save_model
from compressor.data import load_data
from compressor.errors import ConfigError
from compressor.fs import atomic_dir, is_main_process
from compressor.prune.config import PruneConfig
from compressor.schema import build_strict
from compressor.stages.base import STAGES, Context, StageBase, StageView, score_fields
from compressor.stages.context import model_labels, resolve_path
from compressor.stages.rundir import read_json
from compressor.stages.tables import structure_table
from compressor.task import config_task

PLAN_FROM_ANALYSE = "analyse"  # `plan: analyse` follows the plan of the recipe's analyse stage
VOCAB_FROM_TRAIN = "train"  # `vocab: train` keeps the token ids of the training data
BASE_FROM_FINETUNE = "finetune"  # `update_base: finetune`: the checkpoint the recipe's fine-tuning started from


class PruneStage(StageBase):
    key = "prune"
    config_cls = PruneConfig
    output = "model"
    gives = "model"
    repeatable = True
    path_keys: ClassVar[dict[str, tuple[str, ...]]] = {
        "plan": (PLAN_FROM_ANALYSE,),
        "vocab": (VOCAB_FROM_TRAIN,),
        "update_base": ("minilm", BASE_FROM_FINETUNE),
    }
    example = "- prune: {plan: analyse, recover: reconstruct+distill, recover_steps: 300, vocab: train}"

    def needs(self, config: PruneConfig) -> tuple[str, ...]:
        return ("model", "plan") if config.plan == PLAN_FROM_ANALYSE else ("model",)

    def data(self, config: PruneConfig) -> dict[str, bool]:
        trains = config.recover != "none" or config.vocab == VOCAB_FROM_TRAIN
        return {"train": True, "eval": False} if trains else {"eval": False}

    def parse(self, values: dict[str, Any], *, source: str, base_dir: Path) -> PruneConfig:
        values = dict(values)
        for key, allowed in self.path_keys.items():
            value, word = values.get(key), allowed[-1]
            if isinstance(value, bool) and key == "vocab":  # `vocab: true` reads as the training data
                values[key] = VOCAB_FROM_TRAIN if value else None
            elif isinstance(value, str) and value not in allowed:
                path = resolve_path(value, base_dir)
                if not path.exists():
                    raise ConfigError(
                        f"{source}: {key} `{value}` not found (looked for `{path}`); give a file or `{word}`"
                    )
                values[key] = str(path.resolve())
        config = build_strict(PruneConfig, values, source)
        if config.plan is None and not (config.heads or config.ffn):
            raise ConfigError(
                f"{source}: give `plan` (a plan.json or `{PLAN_FROM_ANALYSE}`) or `heads`/`ffn` fractions"
            )
        return config

    def run(self, ctx: Context, config: PruneConfig) -> dict[str, Any]:
        import dataclasses

        from compressor.prune.api import prune_

        if config.plan == PLAN_FROM_ANALYSE:
            plan = Path(ctx.plan or "") / "plan.json"
            if ctx.plan is None or not plan.is_file():
                raise ConfigError("prune `plan: analyse` needs an analyse stage with a `budget` before it")
            config = dataclasses.replace(config, plan=str(plan))
        base = self._update_base(ctx, config) if config.uses_update_base else None
        model, tokenizer = load_model(ctx.model)
        labels = model_labels(model.config.to_dict()) or {int(k): v for k, v in model.config.id2label.items()}
        task = config_task(model.config.to_dict())
        train = ctx.data.train(labels, sample=False, task=task) if self.data(config).get("train") else None
        if self.data(config).get("train") and train is None:
            raise ConfigError("recovery and `vocab: train` need training data: pass --data")
        vocab = None
        if config.vocab == VOCAB_FROM_TRAIN:
            vocab = train
        elif config.vocab is not None:
            spec = getattr(ctx.data, "spec", None)
            columns = {} if spec is None else {k: v for k, v in spec.columns.items() if k != "label_column"}
            vocab = load_data(config.vocab, require_labels=False, **columns)
        work = ctx.out.parent / f".{ctx.out.name}.partial"  # distillation checkpoints, for resuming
        if not ctx.resume:
            shutil.rmtree(work, ignore_errors=True)
        report = prune_(
            model,
            config,
            tokenizer=tokenizer,
            data=train,
            eval_data=ctx.data.eval(labels, task=task),
            vocab_data=vocab,
            base=base,
            work_dir=work,
            resume=ctx.resume,
            quiet=ctx.quiet,
        )
        if is_main_process():  # under accelerate/torchrun only rank 0 writes
            with atomic_dir(ctx.out) as tmp:
                save_model(model, tokenizer, tmp)
            shutil.rmtree(work, ignore_errors=True)
        return {
            **score_fields(report.metrics),
            "params": report.params_after,
            "params_before": report.params_before,
            "structure": report.structure,
            "encoder_params_before": report.encoder_params_before,
            "encoder_params_after": report.encoder_params_after,
            "recovery": report.recovery,
            "iterations": report.iterations,
            "vocab": report.vocab,
            "unstructured": report.unstructured,
        }

    @staticmethod
    def _update_base(ctx: Context, config: PruneConfig) -> Any:
        """The checkpoint fine-tuning started from, for ranking by the update (a path, `minilm`, or `finetune`)."""
        ref = config.update_base
        if ref == BASE_FROM_FINETUNE:
            recorded = read_json(Path(ctx.adapter) / "base.json") if ctx.adapter is not None else None
            if not isinstance(recorded, dict) or not isinstance(recorded.get("model"), str):
                raise ConfigError(
                    "prune `update_base: finetune` needs a finetune stage before it in the recipe; "
                    "otherwise give the base checkpoint's path"
                )
            ref = recorded["model"]
        return load_model(str(ref))[0]

    def row(self, summary: dict[str, Any]) -> dict[str, str]:
        before, after = summary.get("encoder_params_before"), summary.get("encoder_params_after")
        note = f"encoder {after / before:.1%} of its parameters" if before and after is not None else ""
        return super().row(summary) | {"note": note}

    def describe(self, summary: dict[str, Any]) -> str:
        text = (
            f"encoder parameters {summary['encoder_params_before']:,} → {summary['encoder_params_after']:,}; "
            f"layers (source, heads, FFN) {[tuple(s) for s in summary['structure']]}"
        )
        vocab = summary.get("vocab")
        if vocab:
            text += (
                f"; vocabulary {vocab['kept']:,} of {vocab['source_size']:,} ids, weights "
                f"{vocab['model_bytes_before'] / 1e6:.1f} MB → {vocab['model_bytes_after'] / 1e6:.1f} MB"
            )
        if summary.get("accuracy") is not None:
            text += f"; validation accuracy {summary['accuracy']:.4f}"
        elif summary.get("score") is not None:
            text += f"; validation {summary.get('metric')} {summary['score']:.4f}"
        elif summary.get("score") is not None:
            text += f"; validation {summary.get('metric')} {summary['score']:.4f}"
        return text

    def sections(self, view: StageView) -> list[tuple[str, list[Any]]]:
        if not view.done:
            return []

        before = _source_config(view)
        after = _read_config(view.out / "config.json")
        table = structure_table(before, after)
        blocks: list[Any] = [("table", table)] if table else []
        summary = view.summary
        if summary.get("encoder_params_before"):
            blocks.append(
                (
                    "p",
                    f"Stage `{view.name}`: encoder parameters {summary['encoder_params_before']:,} → "
                    f"{summary['encoder_params_after']:,}; model parameters {summary['params_before']:,} → "
                    f"{summary['params']:,}.",
                )
            )
        return [("Structure", blocks)]


def _read_config(path: Path) -> dict[str, Any] | None:
    return read_json(path)


def _source_config(view: StageView) -> dict[str, Any] | None:
    """config.json of the model this prune started from: the model an earlier stage gave, or the recipe's."""
    for earlier in reversed(view.earlier):
        if STAGES.get(earlier.key).gives == "model":
            return _read_config(earlier.out / "config.json")

    recipe = read_json(view.run_dir / "recipe.json") or {}
    model = recipe.get("model")
    if not model:
        return None
    if model == "minilm":
        model = str(resolve_model_path(model))
    return _read_config(Path(model) / "config.json")
