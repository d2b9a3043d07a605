"""The modules a pruned encoder layer may need that transformers does not have.

A layer that keeps no heads still has its attention residual: out = LayerNorm(x + b_o). A layer that keeps no
FFN neurons likewise reduces to LayerNorm(x + b_out). A zero-width Linear would do the same on paper, but
zero-size matmuls are fragile in ONNX exporters and runtimes, so these write the algebra out. Which module stands
in depends on where the family keeps the norm: inside the replaced block (BERT: `HeadlessAttention`,
`EmptyIntermediate` + `BiasOnly`) or beside it in the layer (DistilBERT: `HeadlessSelfAttention`, `BiasOnly`).
"""

from __future__ import annotations

import torch
from torch import nn


class HeadlessAttention(nn.Module):
    """Attention block with every head removed: LayerNorm(hidden + b_o)."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, None]:
        return self.LayerNorm(hidden_states + self.bias), None


class HeadlessSelfAttention(nn.Module):
    """Self-attention with every head removed, for a layer that adds the residual and normalises itself
    (DistilBERT's TransformerBlock: sa_layer_norm(attention(x) + x)): returns b_o at every position."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, *args: object, **kwargs: object) -> tuple[torch.Tensor, ...]:
        # DistilBERT calls attention(query=x, key=x, value=x, mask=…, …) by keyword
        hidden_states = args[0] if args else kwargs.get("query", kwargs.get("hidden_states"))
        if not isinstance(hidden_states, torch.Tensor):
            raise TypeError("HeadlessSelfAttention needs the hidden states as first argument or `query`")
        out = self.bias.expand(*hidden_states.shape[:-1], self.bias.shape[0])  # (batch, seq, hidden)
        return (out, None) if kwargs.get("output_attentions") else (out,)


class EmptyIntermediate(nn.Module):
    """FFN input side with every neuron removed; passes an empty activation on."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[..., :0]  # (batch, seq, 0)


class BiasOnly(nn.Module):
    """FFN output projection with no input neurons: returns its bias at every position."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*hidden_states.shape[:-1], self.bias.shape[0])  # (batch, seq, hidden)


class RemappedEmbedding(nn.Module):
    """Word embeddings restricted to kept rows; `id_map` sends original token ids to new rows.

    The tokenizer stays unchanged: ids it produces go through `id_map` (unseen ids → the unknown-token row),
    and the lookup is part of the exported ONNX graph.
    """

    def __init__(self, source_vocab: int, kept: int, dim: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(kept, dim))
        # int32: half the bytes of int64 in the artifact, and ONNX Gather takes int32 indices
        self.register_buffer("id_map", torch.zeros(source_vocab, dtype=torch.int32))
        self.padding_idx = padding_idx
        self.embedding_dim = dim
        self.num_embeddings = kept

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(self.id_map[input_ids], self.weight)
