"""AdaMix: inject the expert mixtures, the consistency loss between two routed passes, and merge."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from compressor.arch.adapters import FfnAdapter, slot_path, slots
from compressor.arch.parts import arch_of, encoder_linears, hidden_width
from compressor.errors import ModelError
from compressor.methods.adamix.config import AdamixConfig
from compressor.methods.adamix.layers import AdamixAdapter, AdamixLinear
from compressor.methods.base import refuse_reinjection, wrap_

logger = logging.getLogger(__name__)
LAYERS = (AdamixLinear, AdamixAdapter)  # both forms: merging unwraps either, and neither may be injected twice


def inject_adamix(model: nn.Module, cfg: AdamixConfig) -> nn.Module:
    """Freeze the model and add the expert mixtures of `cfg.experts`' form; experts, shared up-projections and
    the head train.

    lora: every target projection wrapped in an `AdamixLinear`. adapter: every encoder layer's FFN output gets an
    `AdamixAdapter`, in the slot of the dropout that follows the FFN output projection.
    """
    init_generator = torch.Generator().manual_seed(cfg.seed)
    router = torch.Generator().manual_seed(cfg.seed)
    if cfg.experts == "adapter":
        _inject_adapters(model, cfg, init_generator, router)
        return model

    def make(name: str, linear: nn.Linear) -> AdamixLinear:
        return AdamixLinear(
            linear,
            experts=cfg.num_experts,
            rank=cfg.rank,
            alpha=cfg.alpha,
            dropout=cfg.dropout,
            init_generator=init_generator,
            router=router,
            consistency=cfg.consistency,
        )

    wrap_(model, encoder_linears(model, cfg.targets), make, layers=LAYERS, what="AdaMix")
    return model


def _inject_adapters(
    model: nn.Module, cfg: AdamixConfig, init_generator: torch.Generator, router: torch.Generator
) -> None:
    """An `AdamixAdapter` in every encoder layer's FFN-output dropout slot (the layers that have one)."""
    refuse_reinjection(model, LAYERS, "AdaMix")
    arch, path = arch_of(model), slot_path(model)
    found = []
    for i, module in slots(model).items():
        if isinstance(module, FfnAdapter):
            raise ModelError(
                f"layer {i} already keeps a bottleneck adapter (the model was merged from an AdaMix adapter run); "
                "start AdaMix adapter experts from the base checkpoint, or fine-tune this model with another method"
            )
        if not isinstance(module, nn.Dropout):
            kind = type(module).__name__
            raise ModelError(f"AdaMix adapter experts go in `{path}`, a dropout; layer {i} has a {kind} there")
        found.append((f"{arch.layers}.{i}.{path}", module))
    width = hidden_width(model)
    ref = next(model.parameters())

    def make(name: str, dropout: nn.Module) -> AdamixAdapter:
        return AdamixAdapter(
            dropout,
            width=width,
            experts=cfg.num_experts,
            bottleneck=cfg.bottleneck,
            activation=cfg.activation,
            init_generator=init_generator,
            router=router,
            consistency=cfg.consistency,
            device=ref.device,
            dtype=ref.dtype,
        )

    count = wrap_(model, found, make, layers=LAYERS, what="AdaMix")
    logger.info("AdaMix: %d FFN adapters × %d experts, bottleneck %d", count, cfg.num_experts, cfg.bottleneck)


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
    if logits.shape[-1] == 1:  # a regression score: a softmax over one output is constant, so MSE each way
        a, b = logits.float(), second.float()
        return weight * 0.5 * (F.mse_loss(a, b.detach()) + F.mse_loss(b, a.detach()))
    log_p = F.log_softmax(logits.float(), dim=-1)  # (batch, labels)
    log_q = F.log_softmax(second.float(), dim=-1)
    kl_q_p = F.kl_div(log_p, log_q.detach(), log_target=True, reduction="batchmean")  # KL(sg(q) ‖ p)
    kl_p_q = F.kl_div(log_q, log_p.detach(), log_target=True, reduction="batchmean")  # KL(sg(p) ‖ q)
    return weight * 0.5 * (kl_q_p + kl_p_q)


def _consistency_weight(model: nn.Module) -> float:
    """The weight chosen at inject time (every mixture of a model carries the same one; 0 without AdaMix)."""
    return next((float(m.consistency) for m in model.modules() if isinstance(m, LAYERS)), 0.0)
