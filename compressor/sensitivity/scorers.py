"""Importance scorers: each gives a score to every head (per layer), every FFN neuron (per layer) and every
prunable weight tensor (q, k, v, attention output, FFN in, FFN out of each layer). Higher = more important.

Scores are indexed by the *current* model's units, so they work on pruned models; a layer without heads (or FFN)
has an empty score vector. `Scores.joint_scale` says whether head and neuron scores share one scale (both estimate
a loss change); when not, the allocator balances the two kinds before mixing them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compressor.arch.parts import arch_of, encoder_layers, eval_mode, get_module, head_size, hidden_width
from compressor.errors import DataError
from compressor.registry import Registry
from compressor.sensitivity.config import AnalyseConfig
from compressor.sensitivity.cost import LayerShape, layer_shapes
from compressor.sensitivity.masks import Batch, batch_loss, mask_gradient_scores

logger = logging.getLogger(__name__)

HEAD_ROLES = ("query", "key", "value", "attn_out")
FFN_ROLES = ("ffn_in", "ffn_out")


@dataclass
class Scores:
    """Importance of every head, FFN neuron and prunable tensor of the current model."""

    scorer: str
    heads: list[torch.Tensor]  # per layer: (heads in that layer,)
    neurons: list[torch.Tensor]  # per layer: (FFN width of that layer,)
    tensors: dict[str, float]  # parameter name → score
    joint_scale: bool
    loss: float | None = None  # mean task loss of the model on the scoring sample
    hidden: torch.Tensor | None = None  # (width,) importance of the residual stream's dimensions, when scored

    def head_matrix(self, width: int | None = None) -> torch.Tensor:
        """(layers, width) head scores by current index, NaN where a layer has fewer heads."""
        width = width if width is not None else max((len(h) for h in self.heads), default=0)
        out = torch.full((len(self.heads), width), float("nan"), dtype=torch.float64)
        for i, h in enumerate(self.heads):
            out[i, : len(h)] = h.double()
        return out


@dataclass(frozen=True)
class Scorer:
    """A registered scorer: `fn(model, batches, config) -> Scores`; `batches` is None when not `needs_data`."""

    fn: Callable[[nn.Module, list[Batch] | None, AnalyseConfig], Scores]
    needs_data: bool
    help: str


SCORERS: Registry[Scorer] = Registry("scorer")


def _normalise_per_layer(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Divide each layer's scores by their L2 norm (Michel et al. 2019, §4)."""
    return [s / s.norm().clamp_min(1e-20) if len(s) else s for s in scores]


def _prunable(model: nn.Module) -> list[tuple[LayerShape, dict[str, nn.Linear]]]:
    """Per layer, the linears a structured unit owns a slice of, by role (absent when the layer has none)."""
    arch = arch_of(model)
    out = []
    for shape, block in zip(layer_shapes(model), encoder_layers(model), strict=True):
        roles = (HEAD_ROLES if shape.heads else ()) + (FFN_ROLES if shape.neurons else ())
        out.append((shape, {role: get_module(block, getattr(arch, role)) for role in roles}))
    return out


def _param_names(model: nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def _unit_sums(
    model: nn.Module, values: dict[tuple[int, str, str], torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Sum elementwise `values[(layer, role, "weight"|"bias")]` over each head's and each neuron's coupled group.

    A head owns head_dim rows (and biases) of q, k, v and the same columns of the output projection; an FFN
    neuron one row (and bias) of FFN-in and one column of FFN-out (Torch-Pruning's coupled groups).
    """
    head_dim = head_size(model)
    heads, neurons = [], []
    for shape, _ in _prunable(model):
        i, h_count = shape.index, shape.heads
        h = torch.zeros(h_count, dtype=torch.float64)
        if h_count:
            for role in ("query", "key", "value"):
                if (w := values.get((i, role, "weight"))) is not None:
                    h += w.reshape(h_count, head_dim, -1).sum((1, 2)).double()  # (heads, head_dim, hidden)
                if (b := values.get((i, role, "bias"))) is not None:
                    h += b.reshape(h_count, head_dim).sum(1).double()  # (heads, head_dim)
            if (w := values.get((i, "attn_out", "weight"))) is not None:
                h += w.reshape(w.shape[0], h_count, head_dim).sum((0, 2)).double()  # (hidden, heads, head_dim)
        n = torch.zeros(shape.neurons, dtype=torch.float64)
        if shape.neurons:
            if (w := values.get((i, "ffn_in", "weight"))) is not None:
                n += w.sum(1).double()  # (neurons, hidden)
            if (b := values.get((i, "ffn_in", "bias"))) is not None:
                n += b.double()
            if (w := values.get((i, "ffn_out", "weight"))) is not None:
                n += w.sum(0).double()  # (hidden, neurons)
        heads.append(h)
        neurons.append(n)
    return heads, neurons


def _group_tensor_scores(model: nn.Module, heads: list[torch.Tensor], neurons: list[torch.Tensor]) -> dict[str, float]:
    """For mask scorers, which see coupled groups and not tensors: each tensor gets its layer's unit total."""
    names = _param_names(model)
    out = {}
    for (_shape, linears), h, n in zip(_prunable(model), heads, neurons, strict=True):
        for role, linear in linears.items():
            out[names[id(linear.weight)]] = float((h if role in HEAD_ROLES else n).sum())
    return out


def _require(batches: list[Batch] | None, scorer: str) -> list[Batch]:
    if not batches:
        raise DataError(f"scorer `{scorer}` needs labelled examples; pass --data")
    return batches


def head_importance(model: nn.Module, batches: Iterable[Batch], *, normalise: bool = True) -> torch.Tensor:
    """Head importance of Michel et al. 2019: Σ_examples |∂L/∂ξ_h| for a head mask ξ, each layer L2-normalised.

    Returns (layers, config.num_attention_heads), indexed by current head position, NaN past a layer's head
    count (pruned layers). The importance Pruning-Adapter ranks heads by.
    """
    heads, _, _ = mask_gradient_scores(model, batches, power=1, neurons=False, desc="scoring heads")
    if normalise:
        heads = _normalise_per_layer(heads)
    width = arch_of(model).num_heads(model.config)
    return Scores("head-gradient", heads, [], {}, joint_scale=False).head_matrix(width)


def score_head_gradient(model: nn.Module, batches: list[Batch] | None, config: AnalyseConfig) -> Scores:
    """`head-gradient`: Σ_examples |∂L/∂ξ| of head and neuron masks, normalised per layer (Michel et al. 2019)."""
    heads, neurons, loss = mask_gradient_scores(model, _require(batches, "head-gradient"), power=1)
    tensors = _group_tensor_scores(model, heads, neurons)
    return Scores(
        "head-gradient",
        _normalise_per_layer(heads),
        _normalise_per_layer(neurons),
        tensors,
        joint_scale=False,
        loss=loss,
    )


def score_fisher(model: nn.Module, batches: list[Batch] | None, config: AnalyseConfig) -> Scores:
    """`fisher`: diagonal empirical Fisher of the masks, Σ_examples (∂L_i/∂ξ)² (Kwon et al. 2022)."""
    heads, neurons, loss = mask_gradient_scores(model, _require(batches, "fisher"), power=2)
    tensors = _group_tensor_scores(model, heads, neurons)
    return Scores("fisher", heads, neurons, tensors, joint_scale=True, loss=loss)


def score_taylor(model: nn.Module, batches: list[Batch] | None, config: AnalyseConfig) -> Scores:
    """`taylor`: first-order |θ·∂L/∂θ|, accumulated per batch and summed per head, neuron and tensor."""
    from tqdm.auto import tqdm

    batches = _require(batches, "taylor")
    names = _param_names(model)
    params: list[tuple[tuple[int, str, str], nn.Parameter]] = []
    for shape, linears in _prunable(model):
        for role, linear in linears.items():
            params.append(((shape.index, role, "weight"), linear.weight))
            if linear.bias is not None and role != "ffn_out" and role != "attn_out":  # o / FFN-out biases stay
                params.append(((shape.index, role, "bias"), linear.bias))
    tensors = [p for _, p in params]
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in tensors]
    flags = [p.requires_grad for p in tensors]
    total_loss, examples = 0.0, 0
    try:
        for p in tensors:
            p.requires_grad_(True)
        with eval_mode(model):
            for batch in tqdm(batches, desc="scoring (taylor)", disable=not logger.isEnabledFor(logging.INFO)):
                loss = batch_loss(model, batch)
                for a, p, g in zip(acc, tensors, torch.autograd.grad(loss, tensors), strict=True):
                    a += (p.detach() * g).abs().float()  # |θ ⊙ ∂L/∂θ| per element
                total_loss += float(loss.detach())
                examples += int(batch["labels"].shape[0])
    finally:
        for p, flag in zip(tensors, flags, strict=True):
            p.requires_grad_(flag)
    values = {key: a for (key, _), a in zip(params, acc, strict=True)}
    heads, neurons = _unit_sums(model, values)
    tensor_scores = {
        names[id(p)]: float(a.sum()) for (key, p), a in zip(params, acc, strict=True) if key[2] == "weight"
    }
    return Scores("taylor", heads, neurons, tensor_scores, joint_scale=True, loss=total_loss / max(examples, 1))


def _mean_loss(model: nn.Module, batches: list[Batch]) -> float:
    total, examples = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            total += float(batch_loss(model, batch))
            examples += int(batch["labels"].shape[0])
    return total / max(examples, 1)


def score_tensor_loss(model: nn.Module, batches: list[Batch] | None, config: AnalyseConfig) -> Scores:
    """`tensor-loss`: OUR PROXY of Sensi-BERT's per-tensor sensitivity ranking (its exact formula is not public).

    Each prunable weight tensor on its own is magnitude-pruned to `config.density`; its score is the loss
    increase on the sample divided by its size. Heads and neurons inherit it: a unit's score is Σ over its
    tensors of max(score, 0) × (the unit's |w| sum / the tensor's mean |w|), i.e. the tensor's per-weight loss
    increase times the unit's weight count, scaled by how large the unit's weights are within that tensor.
    """
    from tqdm.auto import tqdm

    batches = _require(batches, "tensor-loss")
    names = _param_names(model)
    targets = [
        ((shape.index, role), linear.weight) for shape, linears in _prunable(model) for role, linear in linears.items()
    ]
    sensitivity: dict[tuple[int, str], float] = {}
    with eval_mode(model):
        base = _mean_loss(model, batches)
        for key, weight in tqdm(targets, desc="scoring (tensor-loss)", disable=not logger.isEnabledFor(logging.INFO)):
            n_prune = weight.numel() - math.ceil(config.density * weight.numel())
            saved = weight.detach().clone()
            with torch.no_grad():
                order = torch.sort(weight.detach().abs().flatten(), stable=True).indices
                weight.view(-1)[order[:n_prune]] = 0.0
            try:
                sensitivity[key] = (_mean_loss(model, batches) - base) / weight.numel()
            finally:
                with torch.no_grad():
                    weight.copy_(saved)
    largest = max((abs(v) for v in sensitivity.values()), default=0.0)
    floor = 1e-6 * largest if largest > 0 else 1e-12  # keeps magnitude order among insensitive tensors
    values = {}
    for key, weight in targets:
        magnitude = weight.detach().abs().float()
        values[(*key, "weight")] = (max(sensitivity[key], 0.0) + floor) * magnitude / magnitude.mean().clamp_min(1e-20)
    heads, neurons = _unit_sums(model, values)
    tensors = {names[id(w)]: sensitivity[key] for key, w in targets}
    return Scores("tensor-loss", heads, neurons, tensors, joint_scale=True, loss=base)


def score_magnitude(model: nn.Module, batches: list[Batch] | None, config: AnalyseConfig) -> Scores:
    """`magnitude`: data-free baseline, the mean |w| of each head's, neuron's and tensor's weights."""
    names = _param_names(model)
    values, tensors = {}, {}
    hidden, head_dim = hidden_width(model), head_size(model)
    for shape, linears in _prunable(model):
        for role, linear in linears.items():
            values[(shape.index, role, "weight")] = linear.weight.detach().abs().float()
            tensors[names[id(linear.weight)]] = float(linear.weight.detach().abs().mean())
    heads, neurons = _unit_sums(model, values)
    heads = [h / (4 * hidden * head_dim) for h in heads]  # mean over the head's q, k, v rows and o columns
    neurons = [n / (2 * hidden) for n in neurons]
    return Scores("magnitude", heads, neurons, tensors, joint_scale=False, loss=None)


# The full list, in one place (compressor.sensitivity.config.SCORER_NAMES must name the same set).
SCORERS.register(
    "head-gradient",
    Scorer(
        score_head_gradient,
        needs_data=True,
        help="Σ|∂L/∂ξ| of head and neuron masks, normalised per layer (Michel et al. 2019)",
    ),
)
SCORERS.register(
    "taylor", Scorer(score_taylor, needs_data=True, help="first-order |θ·∂L/∂θ| summed per head, neuron and tensor")
)
SCORERS.register(
    "tensor-loss",
    Scorer(
        score_tensor_loss,
        needs_data=True,
        help=(
            "our proxy of Sensi-BERT's per-tensor ranking: loss increase when one tensor is magnitude-pruned, "
            "per weight"
        ),
    ),
)
SCORERS.register(
    "fisher",
    Scorer(
        score_fisher,
        needs_data=True,
        help="diagonal empirical Fisher Σ(∂L/∂ξ)² of head and neuron masks (Kwon et al. 2022)",
    ),
)
SCORERS.register("magnitude", Scorer(score_magnitude, needs_data=False, help="mean |w| per unit (data-free)"))


def needs_data(name: str) -> bool:
    return SCORERS.get(name).needs_data


def run_scorer(name: str, model: nn.Module, batches: list[Batch] | None, config: AnalyseConfig) -> Scores:
    """Look up a scorer and run it; checks that data-driven scorers got data."""
    scorer = SCORERS.get(name)
    if scorer.needs_data:
        _require(batches, name)
    return scorer.fn(model, batches, config)


def describe_scorers() -> dict[str, Any]:
    return {name: SCORERS.get(name).help for name in SCORERS.names()}
