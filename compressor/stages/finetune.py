"""The `finetune` stage: a method trained on the training data; its output is the adapter, not a model.

Output directory (written whole; the Trainer's checkpoints for resuming live in a hidden `.NAME.partial` sibling):
    adapter.safetensors  trainable tensors + the method's prefixed buffers, or, for a method that stores a delta
    delta.safetensors    (HiWi) instead: only the base tensors it changed, merged, under their stock names
    method.json          the method config (kind, version, fields)
    train.json           the training config
    labels.json          id2label (a regression head's is {"0": "LABEL_0"}: one output)
    base.json            the base checkpoint reference and its weights fingerprint
    structure.json       only when the method changed the structure before training (Pruning-Adapter)
    metrics.json         accuracy (regression: pearson, spearman, mse), loss, trainable/total parameters, wall time
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from compressor.checkpoint import load_model, model_fingerprint, read_config, resolve_model_path
from compressor.errors import ConfigError, MergeError
from compressor.fs import atomic_dir
from compressor.schema import build_strict, config_from_dict, config_to_dict, load_json, save_json
from compressor.stages.base import Context, StageBase, score_fields
from compressor.stages.context import model_task
from compressor.train.config import TrainConfig

ADAPTER_NAME = "adapter.safetensors"
DELTA_NAME = "delta.safetensors"

# Sentences on which a rebuilt or merged model must give the trained model's logits (real text, no data file needed).
PARITY_TEXTS = [
    "a gripping, beautifully acted film that stays with you.",
    "the plot is thin and the jokes fall flat.",
    "it 's neither as funny nor as clever as it thinks it is .",
    "an utterly charming and often affecting journey .",
]
DELTA_ATOL = 1e-4


@dataclass(kw_only=True)
class FinetuneConfig:
    """Which method trains (its options), and how (the training settings)."""

    kind: ClassVar[str] = "finetune"
    version: ClassVar[int] = 1

    method: str = field(default="full", metadata={"help": "A registered fine-tuning method."})
    options: Any = None  # the method's config dataclass, built from a mapping
    train: TrainConfig = field(default_factory=TrainConfig)


def partial_dir(out_dir: Path) -> Path:
    """Where an unfinished fine-tune keeps its Trainer checkpoints (beside the output, hidden)."""
    return out_dir.parent / f".{out_dir.name}.partial"


class FinetuneStage(StageBase):
    key = "finetune"
    config_cls = FinetuneConfig
    output = "adapter"
    gives = "adapter"
    consumes = ("model",)  # the model is not usable again until the adapter is merged
    example = "- finetune: {method: lora, options: {rank: 8}, train: {epochs: 1, lr: 5e-4}}"

    def data(self, config: FinetuneConfig) -> dict[str, bool]:
        return {"train": True, "eval": False}

    def parse(self, values: dict[str, Any], *, source: str, base_dir: Path) -> FinetuneConfig:
        from compressor.methods.base import METHODS

        allowed = ("method", "options", "train")
        unknown = sorted(set(map(str, values)) - set(allowed))
        if unknown:
            raise ConfigError(f"{source}: unknown key `{unknown[0]}`; allowed: {', '.join(allowed)}")
        method = values.get("method", "full")
        if not isinstance(method, str) or method not in METHODS:
            raise ConfigError(f"{source}: unknown method `{method}`; allowed: {', '.join(METHODS.names())}")
        options, train = values.get("options") or {}, values.get("train") or {}
        for key, value in (("options", options), ("train", train)):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: `{key}` must be a mapping; got {value!r}")
        return FinetuneConfig(
            method=method,
            options=build_strict(METHODS.get(method).config_cls, options, f"{source} options (method {method})"),
            train=build_strict(TrainConfig, train, f"{source} train"),
        )

    def run(self, ctx: Context, config: FinetuneConfig) -> dict[str, Any]:
        from safetensors.torch import save_file
        from transformers import set_seed

        from compressor.arch.structure import is_pruned
        from compressor.methods.api import finetune
        from compressor.methods.base import adapter_state

        task = model_task(read_config(resolve_model_path(ctx.model)))  # a trained head's task decides the data's
        train = ctx.data.train(task=task)
        if train is None:
            raise ConfigError("finetune needs training data: pass --data")
        val = ctx.data.eval(train.id2label, task=train.task)
        work = partial_dir(ctx.out)
        if not ctx.resume:
            shutil.rmtree(work, ignore_errors=True)
        set_seed(config.train.seed)  # before loading: a new classifier's initialisation draws from it
        model, tokenizer = load_model(ctx.model, num_labels=train.num_labels, id2label=train.id2label)
        result = finetune(
            model,
            config.options,
            tokenizer=tokenizer,
            data=train,
            eval_data=val,
            train=config.train,
            work_dir=work,
            resume=ctx.resume,
            quiet=ctx.quiet,
        )
        metrics = result.metrics
        if result.is_main_process:  # under accelerate/torchrun only rank 0 writes
            delta = result.method.delta(result.model) if result.method.delta is not None else None
            model_bytes = None
            if delta is not None:  # check now, while the trained model is here, that base + delta rebuilds it
                structure = result.structure if is_pruned(result.structure) else None
                rebuilt = base_plus_delta(ctx.model, train.id2label, structure, delta)
                metrics["delta_max_abs_diff"] = logit_gap(result.model, rebuilt, tokenizer)
                if metrics["delta_max_abs_diff"] > DELTA_ATOL:
                    raise MergeError(
                        f"base + stored delta differs from the trained model by {metrics['delta_max_abs_diff']:.2e} "
                        f"in the logits (> {DELTA_ATOL:g}); the method's delta misses a changed tensor"
                    )
                model_bytes = sum(v.numel() * v.element_size() for v in rebuilt.state_dict().values())
            state = delta if delta is not None else adapter_state(result.model, result.method)
            stored_name = DELTA_NAME if delta is not None else ADAPTER_NAME
            with atomic_dir(ctx.out) as tmp:
                save_file(state, str(tmp / stored_name), metadata={"method": config.method})
                save_json(tmp / "method.json", config_to_dict(config.options))
                save_json(tmp / "train.json", config_to_dict(config.train))
                save_json(tmp / "labels.json", {str(k): v for k, v in train.id2label.items()})
                base = str(ctx.model) if str(ctx.model) == "minilm" else str(Path(str(ctx.model)).resolve())
                save_json(
                    tmp / "base.json",
                    {"model": base, "fingerprint": model_fingerprint(resolve_model_path(str(ctx.model)))},
                )
                if is_pruned(result.structure):
                    save_json(tmp / "structure.json", result.structure)
                metrics["adapter_bytes"] = (tmp / stored_name).stat().st_size
                if model_bytes:
                    metrics["model_bytes"] = model_bytes
                    metrics["stored_share"] = metrics["adapter_bytes"] / model_bytes
                save_json(tmp / "metrics.json", metrics)
            shutil.rmtree(work, ignore_errors=True)
        evaluated = {k.removeprefix("eval_"): v for k, v in metrics.items() if k.startswith("eval_")}
        return {
            "method": config.method,
            **score_fields(evaluated),
            "params": result.total,
            "trainable": result.trainable,
            "metrics": metrics,
        }

    def row(self, summary: dict[str, Any]) -> dict[str, str]:
        return super().row(summary) | {"note": f"method {summary.get('method')}"}

    def describe(self, summary: dict[str, Any]) -> str:
        acc, score = summary.get("accuracy"), summary.get("score")
        trainable, total = summary.get("trainable") or 0, summary.get("params") or 1
        quality = ""
        if acc is not None:
            quality = f", validation accuracy {acc:.4f}"
        elif score is not None:
            quality = f", validation {summary.get('metric')} {score:.4f}"
        return (
            f"{summary.get('method')}: trained {trainable:,} of {total:,} parameters ({100 * trainable / total:.3f}%)"
            + quality
        )


def load_adapter_dir(run_dir: Path, *, base: str | None = None) -> tuple[Any, Any, str]:
    """Re-create the trained (unmerged) model of a fine-tuning output directory: (model, tokenizer, method name).

    Args:
        base: the base checkpoint, when it is no longer where the run recorded it; its weights must be the ones
            the run was trained on (the fingerprint in base.json).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from compressor.methods.base import METHODS, load_adapter_state_

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MergeError(f"run directory `{run_dir}` not found; pass the --out of `compressor finetune`")
    stored = next((run_dir / n for n in (ADAPTER_NAME, DELTA_NAME) if (run_dir / n).is_file()), None)
    if stored is None:
        raise MergeError(f"`{run_dir}` has no {ADAPTER_NAME}; pass the --out directory of `compressor finetune`")
    method_json = _json_object(run_dir / "method.json", "method config")
    method = METHODS.get(str(method_json.get("kind", "?")))
    cfg = config_from_dict(method.config_cls, method_json, source=str(run_dir / "method.json"))
    recorded = _json_object(run_dir / "base.json", "base reference")
    labels = _labels(run_dir / "labels.json")
    base_ref = base or recorded.get("model")
    if not isinstance(base_ref, str):
        raise MergeError(f"`{run_dir / 'base.json'}` names no base model; pass --base with the base checkpoint")
    base_path = resolve_model_path(base_ref)
    expected = recorded.get("fingerprint")
    if expected is not None and model_fingerprint(base_path) != expected:
        raise MergeError(
            f"the base checkpoint `{base_ref}` is not the one `{run_dir}` was trained on (its weights differ); "
            "pass --base with the original checkpoint"
        )
    structure_file = run_dir / "structure.json"
    structure = _json_object(structure_file, "structure") if structure_file.is_file() else None
    try:
        state = load_file(str(stored))
    except (SafetensorError, OSError) as err:  # SafetensorError: a truncated or malformed file
        raise MergeError(
            f"`{stored}` is not a readable safetensors file ({err}); rerun `compressor finetune`"
        ) from None
    model, tokenizer = _base_model(base_ref, labels, structure)
    if stored.name != DELTA_NAME:  # a delta holds the changed tensors under stock names: base + delta is the model
        model = method.inject(model, cfg)
    load_adapter_state_(model, state)
    return model.eval(), tokenizer, method.name


def _base_model(base_ref: str, labels: dict[int, str], structure: dict[str, Any] | None) -> tuple[Any, Any]:
    """The base checkpoint with the run's labels and, when the method changed it, the run's structure."""
    from compressor.arch.surgery import apply_structure_

    model, tokenizer = load_model(base_ref, num_labels=len(labels), id2label=labels)
    if structure is not None:
        apply_structure_(model, structure)
    return model, tokenizer


def base_plus_delta(
    base_ref: str | Path, labels: dict[int, str], structure: dict[str, Any] | None, delta: dict[str, Any]
) -> Any:
    """A fresh copy of the base model with the stored delta's tensors written over its own (stock names)."""
    from compressor.methods.base import load_adapter_state_

    model, _ = _base_model(str(base_ref), labels, structure)
    load_adapter_state_(model, delta)
    return model.eval()


def logit_gap(trained: Any, other: Any, tokenizer: Any) -> float:
    """Max |Δlogit| between two models on PARITY_TEXTS (each on its own device)."""
    import torch

    from compressor.arch.parts import model_inputs

    enc = tokenizer(PARITY_TEXTS, padding=True, return_tensors="pt")
    enc = {k: v for k, v in enc.items() if k in model_inputs(trained)}  # DistilBERT takes no token_type_ids
    outputs = []
    with torch.no_grad():
        for model in (trained, other):
            device = next(model.parameters()).device
            was_training = model.training
            model.eval()
            outputs.append(model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu())
            model.train(was_training)
    return float((outputs[0] - outputs[1]).abs().max())


def _json_object(path: Path, what: str) -> dict[str, Any]:
    data = load_json(path, what=what)
    if not isinstance(data, dict):
        raise MergeError(f"{what} `{path}` is not a JSON object; rerun `compressor finetune`")
    return data


def _labels(path: Path) -> dict[int, str]:
    raw = _json_object(path, "label map")
    if not raw or not all(str(k).lstrip("-").isdigit() and isinstance(v, str) for k, v in raw.items()):
        raise MergeError(f"label map `{path}` must map integer ids to label names; rerun `compressor finetune`")
    return {int(k): v for k, v in raw.items()}
