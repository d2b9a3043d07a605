"""PaFi: choose the task-agnostic mask, inject the sparse deltas, merge them back, count what is stored."""

from __future__ import annotations

import logging

import torch
from torch import nn

from compressor.arch.parts import encoder_linears
from compressor.errors import ModelError
from compressor.methods.base import refuse_reinjection, wrap_
from compressor.methods.pafi.config import PafiConfig
from compressor.methods.pafi.layers import PafiLinear

logger = logging.getLogger(__name__)


def budget(eligible: int, fraction: float) -> int:
    """k = round(fraction · N), at least one entry."""
    return max(1, min(eligible, round(fraction * eligible)))


@torch.no_grad()
def select_mask(model: nn.Module, cfg: PafiConfig) -> dict[str, torch.Tensor]:
    """Flat indices of the k smallest-|θ| entries per eligible matrix, ranked globally over all of them.

    Depends on the pretrained weights only. Ties at the threshold are broken by position (matrix order, then
    flat index), so the mask is deterministic and has exactly k entries.
    """
    linears = encoder_linears(model, cfg.targets)
    if not linears:
        raise ModelError(f"PaFi found no encoder weight matrices for targets {cfg.targets}")
    magnitudes = torch.cat([m.weight.detach().abs().reshape(-1).float() for _, m in linears])  # (N,)
    k = budget(magnitudes.numel(), cfg.fraction)
    threshold = torch.kthvalue(magnitudes, k).values  # the k-th smallest |θ|
    chosen = magnitudes < threshold
    ties = torch.nonzero(magnitudes == threshold).squeeze(1)  # (n_ties,) in position order
    chosen[ties[: k - int(chosen.sum())]] = True
    parts = torch.split(chosen, [m.weight.numel() for _, m in linears])
    return {name: torch.nonzero(part).squeeze(1) for (name, _), part in zip(linears, parts, strict=True)}


def inject_pafi(model: nn.Module, cfg: PafiConfig) -> nn.Module:
    """Freeze the model, wrap every matrix holding masked entries in a `PafiLinear`, train those and the head."""
    refuse_reinjection(model, (PafiLinear,), "PaFi")  # before the mask: an injected model has no plain linears left
    masks = select_mask(model, cfg)
    chosen = [(name, model.get_submodule(name)) for name, indices in masks.items() if indices.numel()]
    wrap_(model, chosen, lambda name, linear: PafiLinear(linear, masks[name]), layers=(PafiLinear,), what="PaFi")
    logger.info(
        "PaFi: %s entries train in %d of %d matrices",
        f"{sum(int(i.numel()) for i in masks.values()):,}",
        len(chosen),
        len(masks),
    )
    return model


def masked_entries(model: nn.Module) -> int:
    """k: how many pretrained entries PaFi trains in an injected model."""
    return sum(m.pafi_indices.numel() for m in model.modules() if isinstance(m, PafiLinear))


def stored_bytes(model: nn.Module) -> int:
    """Bytes of what a PaFi run stores: indices (int32) + values of every matrix, plus the trainable head."""
    total = 0
    for module in model.modules():
        if isinstance(module, PafiLinear):
            total += module.pafi_indices.numel() * module.pafi_indices.element_size()
    for param in model.parameters():
        if param.requires_grad:
            total += param.numel() * param.element_size()
    return total
