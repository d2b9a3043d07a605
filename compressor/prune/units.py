"""Which units go: the lowest-magnitude fraction of each layer (or the heads fine-tuning moved least), given counts
per layer, or exactly a plan's; and the unstructured masks (single weights, by magnitude or by update)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from compressor.arch.parts import encoder_linears, zero_smallest_
from compressor.arch.structure import is_pruned, structure_of
from compressor.arch.surgery import apply_structure_, drop_layers_, prune_ffn_, prune_heads_, prune_hidden_
from compressor.errors import PruneError
from compressor.methods.dsee.method import dsee_head_scores
from compressor.sensitivity.config import AnalyseConfig
from compressor.sensitivity.plan import Plan, check_plan_fits
from compressor.sensitivity.scorers import score_magnitude


def _magnitudes(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, the `magnitude` scorer's value of each head and FFN neuron (mean |w| of its coupled group)."""
    scores = score_magnitude(model, None, AnalyseConfig(scorer="magnitude"))
    return scores.heads, scores.neurons


def _top(scores: torch.Tensor, keep_n: int) -> list[int]:
    return sorted(torch.argsort(scores, descending=True, stable=True)[:keep_n].tolist())


def kept_count(n: int, fraction_removed: float) -> int:
    """Units left of `n` when `fraction_removed` of them go (rounded down to whole units removed)."""
    return n - int(math.floor(n * fraction_removed + 1e-9))


def prune_by_fraction_(model: nn.Module, heads: float, ffn: float) -> None:
    """Remove the lowest-magnitude `heads` fraction of heads and `ffn` fraction of neurons in every layer."""
    head_scores, neuron_scores = _magnitudes(model)
    prune_to_counts_(
        model, [kept_count(len(s), heads) for s in head_scores], [kept_count(len(s), ffn) for s in neuron_scores]
    )


def prune_to_counts_(
    model: nn.Module, heads: list[int], neurons: list[int], head_scores: list[torch.Tensor] | None = None
) -> None:
    """Keep the `heads[i]` heads and `neurons[i]` FFN neurons of largest magnitude in each layer i (heads by
    `head_scores` instead, per layer one score per current head, when given)."""
    magnitude_heads, neuron_scores = _magnitudes(model)
    head_scores = magnitude_heads if head_scores is None else head_scores
    for i, s in enumerate(head_scores):
        if heads[i] < len(s):
            prune_heads_(model, i, _top(s, heads[i]))
    for i, s in enumerate(neuron_scores):
        if neurons[i] < len(s):
            prune_ffn_(model, i, _top(s, neurons[i]))


def update_head_scores(model: nn.Module, base: nn.Module) -> list[torch.Tensor]:
    """Per layer, how much each current head's query/value rows moved from `base` in fine-tuning, Σ|W − W_base|
    (DSEE's structured step ranks heads by it). `base` is the unpruned checkpoint fine-tuning started from; a copy
    of it is cut to `model`'s structure first, so the score also works between prune rounds."""
    return dsee_head_scores(model, _base_like(model, base))


def _base_like(model: nn.Module, base: nn.Module) -> nn.Module:
    """`base` (the unpruned checkpoint fine-tuning started from) cut to `model`'s structure, so entries line up."""
    structure = structure_of(model)
    if is_pruned(structure):
        base = copy.deepcopy(base)
        apply_structure_(base, structure)
    return base


@torch.no_grad()
def unstructured_mask_(
    model: nn.Module, share: float, roles: list[str] | tuple[str, ...], base: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """Zero the `share` of entries with the smallest score in each encoder linear playing one of `roles`, in place.

    Score: |W| without `base` (magnitude pruning); |W − W_base| with it (DSEE draws its unstructured mask from the
    fine-tuning update rather than the weights: entries fine-tuning left where they were go first). Returns the
    keep-masks (True = kept) by parameter name, for `keep_zeros`. Ties at the cut are broken by `topk`.
    """
    reference = dict(encoder_linears(_base_like(model, base), roles)) if base is not None else {}
    masks = {}
    for name, linear in encoder_linears(model, roles):
        weight = linear.weight
        if base is not None and reference[name].weight.shape != weight.shape:
            raise PruneError(f"`{name}`: the base checkpoint has another shape; pass the checkpoint fine-tuning used")
        score = weight.abs() if base is None else (weight - reference[name].weight.to(weight)).abs()
        masks[f"{name}.weight"] = zero_smallest_(weight, score, share)
    return masks


@contextmanager
def keep_zeros(model: nn.Module, masks: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """Masked entries stay zero while training inside the block: their gradients are zeroed (so Adam's moments stay
    zero and decoupled weight decay keeps 0 at 0), and the masks are applied again on exit, after recovery methods
    that merge a dense update into the weights."""
    if not masks:
        yield
        return
    params = dict(model.named_parameters())
    handles = [params[n].register_hook(lambda g, m=m: g * m.to(g.device)) for n, m in masks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask.to(params[name].device))


def apply_plan_(model: nn.Module, plan: Plan) -> None:
    """Prune `model` in place to exactly what `plan` keeps (heads, FFN neurons, whole layers, hidden dimensions)."""
    check_plan_fits(model, plan)
    for entry in plan.layers:
        if entry.dropped:
            continue
        prune_heads_(model, entry.index, entry.heads)
        prune_ffn_(model, entry.index, entry.neurons)
    drop_layers_(model, plan.kept_layers)
    if plan.hidden is not None:
        prune_hidden_(model, plan.hidden)
