"""AdaMix: inject the expert mixtures, the consistency loss between two routed passes, and merge."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from compressor.arch.parts import encoder_linears, set_module
from compressor.errors import ModelError
from compressor.methods.adamix.config import AdamixConfig
from compressor.methods.adamix.layers import AdamixLinear
from compressor.methods.base import freeze_, unfreeze_classifier_

logger = logging.getLogger(__name__)

CONSISTENCY_ATTR = "adamix_consistency"  # model attribute: the loss weight chosen at inject time


def inject_adamix(model: nn.Module, cfg: AdamixConfig) -> nn.Module:
    """Freeze the model and wrap every target projection in an `AdamixLinear`; experts, B and the head train."""
    if any(isinstance(m, AdamixLinear) for m in model.modules()):
        raise ModelError("AdaMix is already injected into this model")
    linears = encoder_linears(model, cfg.targets)
    if not linears:
        raise ModelError(f"AdaMix found no projections for targets {cfg.targets}")
    freeze_(model)
    init_generator = torch.Generator().manual_seed(cfg.seed)
    router = torch.Generator().manual_seed(cfg.seed)
    for name, linear in linears:
        set_module(
            model,
            name,
            AdamixLinear(
                linear,
                experts=cfg.experts,
                rank=cfg.rank,
                alpha=cfg.alpha,
                dropout=cfg.dropout,
                init_generator=init_generator,
                router=router,
            ),
        )
    unfreeze_classifier_(model)
    setattr(model, CONSISTENCY_ATTR, float(cfg.consistency))
    return model


def merge_adamix(model: nn.Module) -> nn.Module:
    """Fold each mixture's averaged update (α/r)·B·mean(A_i) into its weight and drop the wrappers."""
    for name, module in list(model.named_modules()):
        if isinstance(module, AdamixLinear):
            set_module(model, name, module.merge_())
    if hasattr(model, CONSISTENCY_ATTR):
        delattr(model, CONSISTENCY_ATTR)
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
    inner = getattr(model, "module", model)  # under DDP the injected model is `model.module`
    return float(getattr(inner, CONSISTENCY_ATTR, 0.0))
