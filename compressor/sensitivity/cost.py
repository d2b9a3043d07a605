"""The cost model of an encoder: parameters, FLOPs or measured latency, per head, per FFN neuron, per layer.

A layer's cost is `layer + heads·head + neurons·neuron` and the encoder's is `base + Σ layers`. The same four
numbers describe every metric: analytic for `params` and `flops`, a measured table for `latency`
(compressor/sensitivity/latency.py). Everything is computed from the modules themselves, so pruned models with
non-uniform widths, layers without heads (`HeadlessAttention`) and without FFN (`EmptyIntermediate`) count right.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compressor.arch.adapters import adapter_record
from compressor.arch.parts import (
    arch_of,
    attention_heads,
    encoder_layers,
    get_module,
    has_ffn,
    head_size,
    hidden_width,
)
from compressor.errors import ConfigError

METRICS = ("params", "flops", "latency")


@dataclass(frozen=True)
class LayerShape:
    """What one current encoder layer holds."""

    index: int  # position in the current model
    source: int  # layer id in the unpruned model
    heads: int
    head_ids: tuple[int, ...]  # original head ids of the current heads, in order
    neurons: int


@dataclass(frozen=True)
class UnitCosts:
    """Cost of one head, one FFN neuron, one layer's fixed part, and the encoder's fixed part."""

    metric: str
    head: float
    neuron: float
    layer: float
    base: float = 0.0

    def layer_cost(self, heads: int, neurons: int) -> float:
        return self.layer + heads * self.head + neurons * self.neuron

    def encoder_cost(self, shapes: list[LayerShape]) -> float:
        return self.base + sum(self.layer_cost(s.heads, s.neurons) for s in shapes)


def layer_shapes(model: nn.Module) -> list[LayerShape]:
    """Heads and FFN widths of every current layer, read from the modules (does not touch the config)."""
    arch = arch_of(model)
    structure = getattr(model.config, "compressor_structure", None) or {}
    entries = structure.get("layers") or []
    shapes = []
    for i, block in enumerate(encoder_layers(model)):
        heads = attention_heads(block, arch)
        neurons = int(get_module(block, arch.ffn_in).out_features) if has_ffn(block, arch) else 0
        entry = entries[i] if i < len(entries) and len(entries) == len(encoder_layers(model)) else None
        if entry is not None and len(entry["heads"]) == heads:
            source, head_ids = int(entry["source"]), tuple(int(h) for h in entry["heads"])
        else:
            source, head_ids = i, tuple(range(heads))
        shapes.append(LayerShape(index=i, source=source, heads=heads, head_ids=head_ids, neurons=neurons))
    return shapes


def head_params(hidden: int, head_dim: int) -> int:
    """A head owns head_dim rows (+ biases) of q, k and v and head_dim columns of the output projection."""
    return 3 * (hidden * head_dim + head_dim) + hidden * head_dim


def neuron_params(hidden: int) -> int:
    """An FFN neuron owns one row (+ bias) of the FFN-in linear and one column of the FFN-out linear."""
    return 2 * hidden + 1


def layer_fixed_params(hidden: int) -> int:
    """What a layer keeps with no heads and no neurons: output-projection bias, FFN-out bias, two LayerNorms."""
    return 6 * hidden


def head_flops(hidden: int, head_dim: int, seq_len: int) -> int:
    """FLOPs of one head on one sequence (a multiply-add counts 2)."""
    s, d, k = seq_len, hidden, head_dim
    qkv = 3 * (2 * s * d * k + s * k)  # q, k, v projections with bias: (s, d) @ (d, k)
    scores = 2 * s * s * k + 5 * s * s  # q·kᵀ, then scale, mask and softmax (≈ 5 per score)
    context = 2 * s * s * k  # softmax(·) @ v
    out = 2 * s * k * d  # this head's columns of the output projection
    return qkv + scores + context + out


def neuron_flops(hidden: int, seq_len: int) -> int:
    """FLOPs of one FFN neuron on one sequence: its input row, bias and activation, its output column."""
    return seq_len * (2 * hidden + 2) + seq_len * 2 * hidden


def layer_fixed_flops(hidden: int, seq_len: int) -> int:
    """Two bias adds, two residual adds and two LayerNorms (≈ 5 FLOPs per element each)."""
    return seq_len * hidden * (4 + 2 * 5)


def adapter_params(hidden: int, bottleneck: int) -> int:
    """A kept bottleneck adapter (AdaMix's merged experts): down (r, d) + bias, up (d, r) + bias."""
    return 2 * hidden * bottleneck + bottleneck + hidden


def adapter_flops(hidden: int, bottleneck: int, seq_len: int) -> int:
    """Its two projections with biases, the activation (≈ 8 FLOPs per element) and the residual add."""
    return seq_len * (4 * hidden * bottleneck + bottleneck * (1 + 8) + 2 * hidden)


def _adapter_share(model: nn.Module) -> tuple[int, float]:
    """(bottleneck, share of layers holding an adapter); (0, 0.0) without adapters."""
    record = adapter_record(model)
    if record is None:
        return 0, 0.0
    return int(record["bottleneck"]), len(record["layers"]) / max(1, len(encoder_layers(model)))


def analytic_costs(model: nn.Module, metric: str, *, seq_len: int = 128, width: int | None = None) -> UnitCosts:
    """Per-unit `params` or `flops` (at `seq_len`) of the model's encoder, at its width or at `width`.

    A bottleneck adapter kept in the layers (AdaMix with adapter experts) is part of a layer's fixed cost: exact
    when every layer has one (as AdaMix puts them), spread evenly over the layers otherwise.
    """
    hidden, head_dim = width or hidden_width(model), head_size(model)
    bottleneck, share = _adapter_share(model)
    if metric == "params":
        fixed = layer_fixed_params(hidden) + (share * adapter_params(hidden, bottleneck) if bottleneck else 0)
        return UnitCosts("params", head_params(hidden, head_dim), neuron_params(hidden), fixed)
    if metric == "flops":
        fixed = layer_fixed_flops(hidden, seq_len) + (
            share * adapter_flops(hidden, bottleneck, seq_len) if bottleneck else 0
        )
        return UnitCosts("flops", head_flops(hidden, head_dim, seq_len), neuron_flops(hidden, seq_len), fixed)
    raise ConfigError(f"cost metric must be params or flops (latency is measured); got {metric!r}")


def encoder_params(model: nn.Module) -> int:
    """Encoder parameters from the cost model (equals counting the encoder layers' parameters)."""
    return int(analytic_costs(model, "params").encoder_cost(layer_shapes(model)))


def encoder_flops(model: nn.Module, seq_len: int = 128) -> int:
    """Encoder FLOPs for one sequence of `seq_len` tokens."""
    return int(analytic_costs(model, "flops", seq_len=seq_len).encoder_cost(layer_shapes(model)))
