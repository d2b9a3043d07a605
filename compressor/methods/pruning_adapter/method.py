"""Pruning-Adapter: score heads on the task, remove the least important globally, then LoRA on q, k, v.

`prepare` (data-dependent, before training) removes heads physically and, unless set by hand, writes the ids of
the most important layers into `cfg.high_rank_layers`; the run saves that config and the pruned structure, so
`inject` at merge time needs neither data nor a second importance pass.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from compressor.arch.parts import arch_of, encoder_linears, model_inputs
from compressor.arch.structure import ensure_structure, summary
from compressor.arch.surgery import prune_heads_
from compressor.errors import ConfigError, ModelError
from compressor.methods.lora import merge_lora
from compressor.methods.pruning_adapter.config import PruningAdapterConfig
from compressor.methods.pruning_adapter.layers import add_lora
from compressor.sensitivity.masks import make_batches
from compressor.sensitivity.scorers import head_importance

logger = logging.getLogger(__name__)

ROLES = ("query", "key", "value")


def default_top_layers(num_layers: int) -> int:
    """4 of BERT-base's 12 layers get the higher rank; the same share of another depth, rounded, at least one."""
    return max(1, round(4 * num_layers / 12))


def plan_heads(importance: torch.Tensor, fraction: float) -> list[list[int]]:
    """Current head indices each layer keeps after removing round(fraction · all heads) globally.

    Args:
        importance: (layers, width) raw head importance, NaN past a layer's head count. Each layer is divided by
            its L2 norm before the global ranking (Michel et al. 2019); at least one head stays in the model.
    """
    present = ~torch.isnan(importance)  # (layers, width)
    raw = torch.nan_to_num(importance.double(), nan=0.0)
    normalised = raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-20)  # (layers, width)
    total = int(present.sum())
    remove = min(round(fraction * total), max(total - 1, 0))
    candidates = [(float(normalised[i, h]), i, h) for i, h in present.nonzero().tolist()]
    removed = {(i, h) for _, i, h in sorted(candidates)[:remove]}  # ties: lower layer, then lower head first
    return [[h for h in range(int(present[i].sum())) if (i, h) not in removed] for i in range(importance.shape[0])]


def rank_layers(importance: torch.Tensor, keep: list[list[int]], sources: list[int], top: int) -> list[int]:
    """Source ids of the `top` layers with the largest summed (raw) importance of their kept heads, sorted."""
    raw = torch.nan_to_num(importance.double(), nan=0.0)
    totals = [float(raw[i, kept].sum()) if kept else 0.0 for i, kept in enumerate(keep)]
    order = sorted(range(len(totals)), key=lambda i: (-totals[i], i))
    return sorted(sources[i] for i in order[:top])


def prepare_pruning_adapter(model: nn.Module, cfg: PruningAdapterConfig, data: Any, tokenizer: Any) -> None:
    """Score heads with `head-gradient` on `cfg.examples` task examples, remove the least important, pick layers."""
    batches = make_batches(
        tokenizer,
        data,
        samples=cfg.examples,
        seq_len=cfg.max_length,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        num_labels=model.config.num_labels,
        inputs=model_inputs(model),
    )
    importance = head_importance(model, batches, normalise=False)  # (layers, heads), NaN past a layer's heads
    keep = plan_heads(importance, cfg.heads_fraction)
    for i, kept in enumerate(keep):
        prune_heads_(model, i, kept)
    structure = ensure_structure(model)
    if not cfg.high_rank_layers:
        top = cfg.top_layers or default_top_layers(structure["source_layers"])
        cfg.high_rank_layers = rank_layers(importance, keep, [e["source"] for e in structure["layers"]], top)
    removed = sum(int((~torch.isnan(row)).sum()) for row in importance) - sum(len(k) for k in keep)
    logger.info(
        "Pruning-Adapter: removed %d heads (kept per layer %s); rank %d on layers %s, %d elsewhere",
        removed,
        [n for _, n, _ in summary(structure)],
        cfg.high_rank,
        cfg.high_rank_layers,
        cfg.rank,
    )


def inject_pruning_adapter(model: nn.Module, cfg: PruningAdapterConfig) -> nn.Module:
    """LoRA on q, k, v of every layer that has heads (`high_rank` on `cfg.high_rank_layers`); LoRA, every
    LayerNorm and the classifier train. Returns the peft wrapper."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise ModelError("the model already has peft adapters")
    arch = arch_of(model)
    structure = ensure_structure(model)
    bad = [i for i in cfg.high_rank_layers if i >= structure["source_layers"]]
    if bad:
        raise ConfigError(f"`high_rank_layers` {bad} do not exist: the model has {structure['source_layers']} layers")
    if not cfg.high_rank_layers:
        logger.warning("Pruning-Adapter: no high-rank layers chosen (prepare not run); rank %d everywhere", cfg.rank)
    high = set(cfg.high_rank_layers)
    targets = {}
    for name, _ in encoder_linears(model, ROLES):
        layer = int(name[len(arch.layers) + 1 :].split(".", 1)[0])  # "<layers>.<i>.attention.self.query"
        targets[name] = cfg.high_rank if structure["layers"][layer]["source"] in high else cfg.rank
    if not targets:
        raise ModelError("Pruning-Adapter found no q/k/v projections (every head was removed?)")
    wrapped = add_lora(
        model,
        targets,
        rank=cfg.rank,
        alpha=cfg.alpha,
        dropout=cfg.dropout,
        classifier=arch.head_modules(),
        seed=cfg.seed,
    )
    for module in wrapped.modules():
        if isinstance(module, nn.LayerNorm):
            module.requires_grad_(True)
    return wrapped


def merge_pruning_adapter(model: nn.Module) -> nn.Module:
    """Fold LoRA into q, k, v of the (pruned) model; LayerNorms and classifier already hold their trained values."""
    return merge_lora(model)
