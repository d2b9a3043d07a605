"""AdaMix: inject the expert mixtures, the consistency loss between two routed passes, and merge."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from compressor.arch.parts import encoder_linears
from compressor.methods.adamix.config import AdamixConfig
from compressor.methods.adamix.layers import AdamixLinear
from compressor.methods.base import wrap_

logger = logging.getLogger(__name__)


def inject_adamix(model: nn.Module, cfg: AdamixConfig) -> nn.Module:
    """Freeze the model and wrap every target projection in an `AdamixLinear`; experts, B and the head train."""
    init_generator = torch.Generator().manual_seed(cfg.seed)
    router = torch.Generator().manual_seed(cfg.seed)

    def make(name: str, linear: nn.Linear) -> AdamixLinear:
        return AdamixLinear(
            linear,
            experts=cfg.experts,
            rank=cfg.rank,
            alpha=cfg.alpha,
            dropout=cfg.dropout,
            init_generator=init_generator,
            router=router,
            consistency=cfg.consistency,
        )

    wrap_(model, encoder_linears(model, cfg.targets), make, layers=(AdamixLinear,), what="AdaMix")
    return model


def consistency_loss(model: nn.Module, inputs: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor:
    """AdaMix's consistency term: a second routed pass, symmetric KL between the two softmaxes.

    Each direction treats the other pass as a fixed target (stop-gradient): ½·[KL(sg(q)‖p) + KL(sg(p)‖q)], times
    the configured weight. Zero (and no second pass) when the weight is 0 or the model is not training.
    """
    weight = _consistency_weight(model)
    logits = outputs.logits
    if weight == 0 or not model.training:
        return logits.new_zeros(())
    second = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    log_p = F.log_softmax(logits.float(), dim=-1)  # (batch, labels)
    log_q = F.log_softmax(second.float(), dim=-1)
    kl_q_p = F.kl_div(log_p, log_q.detach(), log_target=True, reduction="batchmean")  # KL(sg(q) ‖ p)
    kl_p_q = F.kl_div(log_q, log_p.detach(), log_target=True, reduction="batchmean")  # KL(sg(p) ‖ q)
    return weight * 0.5 * (kl_q_p + kl_p_q)


def _consistency_weight(model: nn.Module) -> float:
    """The weight chosen at inject time (every mixture of a model carries the same one; 0 without AdaMix)."""
    return next((float(m.consistency) for m in model.modules() if isinstance(m, AdamixLinear)), 0.0)
