"""`finetune`: inject a method into a checkpoint, train it with HF Trainer, save only the adapter.

Output directory (written atomically; checkpoints for `--resume` live in a hidden `.NAME.partial` sibling):
    adapter.safetensors  trainable tensors + the method's prefixed buffers
    method.json          the method config (kind, version, fields)
    train.json           the training config
    labels.json          id2label
    base.json            the base checkpoint reference and its weights hash
    structure.json       only when the method changed the structure before training (Pruning-Adapter)
    metrics.json         accuracy, loss, trainable/total parameters, wall time
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.checkpoint import load_model, model_fingerprint, resolve_model_path
from compressor.data import LabelledData, check_matches_model, check_trainable
from compressor.fs import atomic_dir, check_out_dir
from compressor.schema import config_to_dict, save_json

logger = logging.getLogger(__name__)

ADAPTER_NAME = "adapter.safetensors"


@dataclass
class FinetuneReport:
    out_dir: Path
    method: str
    metrics: dict[str, float]
    trainable: int
    total: int

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / max(self.total, 1)


def partial_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial"


def finetune(
    model_ref: str,
    method_name: str,
    method_cfg: Any,
    train_cfg: Any,
    *,
    data: LabelledData,
    eval_data: LabelledData | None,
    out_dir: Path,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
) -> FinetuneReport:
    """Fine-tune `model_ref` with one registered method and save the adapter to `out_dir`."""
    import compressor.methods  # noqa: F401  (registers every method)
    from compressor.arch.structure import is_pruned, structure_of
    from compressor.methods.base import METHODS, adapter_state, count_trainable
    from compressor.train.loop import train

    out_dir = Path(out_dir)
    method = METHODS.get(method_name)
    if not isinstance(method_cfg, method.config_cls):
        raise TypeError(f"method_cfg must be a {method.config_cls.__name__}")
    work = partial_dir(out_dir)
    check_out_dir(out_dir, force=force or resume)  # with --resume, only whether --out can be written
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
    check_trainable(data)
    from transformers import set_seed

    set_seed(train_cfg.seed)
    model, tokenizer = load_model(model_ref, num_labels=data.num_labels, id2label=data.id2label)
    check_matches_model(data, model.config.num_labels, str(model_ref))
    total = sum(p.numel() for p in model.parameters())
    if method.prepare is not None:
        method.prepare(model, method_cfg, data, tokenizer)
    structure = structure_of(model)
    model = method.inject(model, method_cfg)
    trainable = count_trainable(model)
    logger.info(
        "method %s: %s trainable of %s parameters (%.3f%%)",
        method_name,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    result = train(
        model,
        tokenizer,
        train_cfg,
        data=data,
        eval_data=eval_data,
        work_dir=work,
        default_lr=method.default_lr,
        extra_loss=method.loss,
        resume=resume,
        find_unused_parameters=method.find_unused_parameters,
        quiet=quiet,
    )
    metrics = dict(result.metrics) | {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "steps": result.steps,
        "train_examples": len(data),
    }
    if method.stored is not None:
        metrics |= method.stored(model)
    if result.is_main_process:  # under accelerate/torchrun only rank 0 writes
        from safetensors.torch import save_file

        state = adapter_state(model, method)
        with atomic_dir(out_dir) as tmp:
            save_file(state, str(tmp / ADAPTER_NAME), metadata={"method": method_name})
            save_json(tmp / "method.json", config_to_dict(method_cfg))
            save_json(tmp / "train.json", config_to_dict(train_cfg))
            save_json(tmp / "labels.json", {str(k): v for k, v in data.id2label.items()})
            base_path = resolve_model_path(model_ref)
            save_json(
                tmp / "base.json",
                {
                    "model": str(model_ref) if str(model_ref) == "minilm" else str(Path(model_ref).resolve()),
                    "fingerprint": model_fingerprint(base_path),
                },
            )
            if is_pruned(structure):
                save_json(tmp / "structure.json", structure)
            metrics["adapter_bytes"] = (tmp / ADAPTER_NAME).stat().st_size
            save_json(tmp / "metrics.json", metrics)
        shutil.rmtree(work, ignore_errors=True)
    return FinetuneReport(out_dir, method_name, metrics, trainable, total)
