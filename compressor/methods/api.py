"""The fine-tuning verbs: `finetune` (a method found from its config's `kind`, trained with HF Trainer) and
`merge` (every adapter folded into the weights: a model of stock modules, same logits)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

import compressor.methods  # noqa: F401  (registers every method)
from compressor.arch.structure import structure_of
from compressor.data import LabelledData, check_matches_model, check_trainable
from compressor.errors import MergeError
from compressor.methods.base import METHODS, Method, count_trainable, only_stock_modules
from compressor.train.config import TrainConfig
from compressor.train.loop import train as train_loop

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """The trained model (adapters still in place: `merge` folds them) and what the run measured."""

    model: nn.Module
    method: Method
    metrics: dict[str, Any]
    trainable: int
    total: int
    structure: dict[str, Any] = field(default_factory=dict)  # before injection (pruned if `prepare` pruned it)
    is_main_process: bool = True

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / max(self.total, 1)


def method_of(config: Any) -> Method:
    """The registered method a config belongs to (`config.kind`)."""
    return METHODS.get(getattr(type(config), "kind", "?"))


def finetune(
    model: nn.Module,
    config: Any,
    *,
    tokenizer: Any,
    data: LabelledData,
    eval_data: LabelledData | None = None,
    train: TrainConfig | None = None,
    work_dir: Path,
    resume: bool = False,
    quiet: bool = False,
) -> FinetuneResult:
    """Inject the method `config` configures (`DseeConfig()`, `LoraConfig(rank=16)` …) and train it.

    Seed the random generators before loading `model` when its classifier is new (a base encoder): the
    classifier's initialisation draws from them.

    Args:
        train: the training settings (default `TrainConfig()`; the method's learning rate unless `lr` is set).
        work_dir: where the Trainer keeps its checkpoints; with `resume`, training continues from the newest one.
    """
    method = method_of(config)
    train = train or TrainConfig()
    check_trainable(data)
    check_matches_model(data, int(model.config.num_labels), str(getattr(model.config, "_name_or_path", "model")))
    total = sum(p.numel() for p in model.parameters())
    if method.prepare is not None:
        method.prepare(model, config, data, tokenizer)
    structure = structure_of(model)
    model = method.inject(model, config)
    trainable = count_trainable(model)
    logger.info(
        "method %s: %s trainable of %s parameters (%.3f%%)",
        method.name,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    result = train_loop(
        model,
        tokenizer,
        train,
        data=data,
        eval_data=eval_data,
        work_dir=work_dir,
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
        "learning_rate": train.lr or method.default_lr,
    }
    if method.stored is not None:
        metrics |= method.stored(model)
    return FinetuneResult(model, method, metrics, trainable, total, structure, result.is_main_process)


def merge(model: nn.Module) -> nn.Module:
    """Fold every method's adapters in `model` into its weights; the result holds stock modules only."""
    for name in METHODS.names():
        model = METHODS.get(name).merge_(model)
    leftovers = only_stock_modules(model)
    if leftovers:
        raise MergeError(f"merging left modules that are not stock ones: {', '.join(leftovers[:3])}")
    return model
