"""Distillation losses: logits (Hinton et al. 2015), added to the task loss by the training loop."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compressor.train.loop import ExtraLoss


def distillation_loss(teacher: nn.Module, *, weight: float = 1.0, temperature: float = 2.0) -> ExtraLoss:
    """λ·T²·KL(teacher ‖ student) at temperature T, the teacher's logits computed on the fly (Hinton et al. 2015)."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss(model: nn.Module, inputs: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor:
        feed = {k: v for k, v in inputs.items() if k != "labels"}
        with torch.no_grad():
            t_logits = teacher(**feed).logits
        return weight * kl_divergence(outputs.logits, t_logits, temperature)

    return loss


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch; zero when the logits are equal."""
    t = temperature
    log_p_s = nn.functional.log_softmax(student_logits / t, dim=-1)
    log_p_t = nn.functional.log_softmax(teacher_logits / t, dim=-1)
    return nn.functional.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * t * t
