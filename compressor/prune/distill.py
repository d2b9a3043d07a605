"""Recovery by distillation: a short fine-tune of the pruned model towards the unpruned one (logits: Hinton et al.
2015), through any registered fine-tuning method that is merged back afterwards."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.arch.structure import ensure_structure
from compressor.errors import PruneError
from compressor.fs import scratch_dir
from compressor.methods.api import merge
from compressor.methods.base import METHODS, count_trainable
from compressor.prune.config import PruneConfig
from compressor.train.config import TrainConfig, resolve_device, use_bf16
from compressor.train.distill import (
    LayerMap,
    distillation_loss,
    layerwise_outputs,
    relation_taps,
    student_dropout,
)
from compressor.train.loop import train

logger = logging.getLogger(__name__)


class LayerwiseSchedule:
    """The layer-wise weights' multiplier over training: 1 throughout (`constant`), or 1 - done / total
    (`linear`), read by the loss and moved by the training loop before each step (resumed runs included)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.done, self.total = 0, 1

    def step(self, done: int, total: int) -> None:
        self.done, self.total = done, max(1, total)

    def scale(self) -> float:
        return 1.0 if self.kind == "constant" else max(0.0, 1.0 - self.done / self.total)


def distill_(
    model: nn.Module,
    teacher: nn.Module,
    tokenizer: Any,
    config: PruneConfig,
    *,
    data: Any,
    eval_data: Any = None,
    work_dir: Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    steps: int | None = None,
) -> dict[str, Any]:
    """Fine-tune the pruned `model` in place with μ·CE + λ·KL to the unpruned `teacher` (for a regression head:
    μ·MSE to the labels + λ·MSE to the teacher's scores), μ = `config.label_weight`.

    `config.recover_method` chooses what trains: `full` every weight; any other registered method is injected,
    trained and merged back, so the model keeps stock modules and its pruned shapes.

    Args:
        steps: optimizer steps (default `config.recover_steps`).
    """
    steps = steps or config.recover_steps
    method = METHODS.get(config.recover_method)
    device = resolve_device("auto")
    bf16 = use_bf16(config.precision, device)
    cfg = TrainConfig(
        max_steps=steps,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
        save_steps=max(50, steps // 4),
        logging_steps=max(10, steps // 10),
        bf16=bf16,
        ema=config.ema,
    )
    teacher.to(device)  # the Trainer moves the student there; the teacher must follow
    hidden, attention = config.hidden_weight > 0, config.attention_weight > 0
    relation = config.relation_weight > 0
    mapped = hidden or attention or relation
    layers = None
    if mapped:
        layers = LayerMap.between(ensure_structure(model), ensure_structure(teacher), how=config.layer_map)
    if attention and layers is not None and not any(layers.heads):
        logger.warning(
            "attention_weight %s adds nothing here: no student layer learns the teacher layer it came from (layers "
            "matched by layer_map %s: %s), so no head has its own attention map to match; set it to 0 to say so, "
            "or layer_map source to match each layer to its own (relation_weight needs no head in common)",
            config.attention_weight,
            config.layer_map,
            layers.layers,
        )
    schedule = LayerwiseSchedule(config.layerwise_schedule)
    wrapped = method.inject(model, method.config_cls())
    trainable = count_trainable(wrapped)
    with (
        scratch_dir("compressor-distill-") as tmp,
        layerwise_outputs(model, hidden=hidden, attention=attention),
        student_dropout(model, config.dropout),
        # after the injection, so the student's hooks sit on the projections that run (LoRA-wrapped ones included)
        relation_taps(model, teacher, layers if relation else None) as taps,
    ):
        kl = distillation_loss(
            teacher,
            weight=config.distill_weight,
            temperature=config.temperature,
            hidden_weight=config.hidden_weight,
            attention_weight=config.attention_weight,
            relation_weight=config.relation_weight,
            layer_map=layers,
            relations=taps,
            bf16=bf16,
            layerwise_scale=schedule.scale,  # 1.0 throughout for `constant`: the same products
        )

        def extra(m: nn.Module, inputs: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor:
            loss = kl(m, inputs, outputs)
            return loss if method.loss is None else loss + method.loss(m, inputs, outputs)

        result = train(
            wrapped,
            tokenizer,
            cfg,
            data=data,
            eval_data=eval_data,
            work_dir=Path(work_dir or tmp),
            default_lr=method.default_lr,
            extra_loss=extra,
            find_unused_parameters=method.find_unused_parameters,
            resume=resume,
            quiet=quiet,
            on_step=schedule.step,
            task_weight=config.label_weight,
        )
    merged = merge(wrapped)
    if merged is not model:
        raise PruneError(f"recovery method `{config.recover_method}` did not merge back into the model in place")
    model.__dict__.pop("peft_config", None)  # peft leaves it behind after merge_and_unload; a next round would warn
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return result.metrics | {"steps": result.steps, "method": config.recover_method, "trainable": trainable}
