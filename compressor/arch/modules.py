"""The modules a pruned encoder layer may need that transformers does not have.

A layer that keeps no heads still has its attention residual: out = LayerNorm(x + b_o). A layer that keeps no
FFN neurons likewise reduces to LayerNorm(x + b_out). A zero-width Linear would do the same on paper, but
zero-size matmuls are fragile in ONNX exporters and runtimes, so these write the algebra out. Which module stands
in depends on where the family keeps the norm: inside the replaced block (BERT: `HeadlessAttention`,
`EmptyIntermediate` + `BiasOnly`) or beside it in the layer (DistilBERT: `HeadlessSelfAttention`, `BiasOnly`).
"""

from __future__ import annotations

from collections.abc import Callable

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
    """Word embeddings restricted to kept rows, looked up by the tokenizer's original ids.

    The tokenizer stays unchanged and the lookup is part of the exported ONNX graph. With `codes` 0, `id_map`
    sends each original id to one kept row (unseen ids → the unknown-token row or the nearest kept row). With
    `codes` k ≥ 1, each original id is a weighted sum of k kept rows (`code_ids`, `code_weights`; a kept id is its
    own row with weight 1): a dropped word keeps more of its meaning than any single row gives it.
    """

    def __init__(self, source_vocab: int, kept: int, dim: int, padding_idx: int | None = None, codes: int = 0) -> None:
        super().__init__()
        if codes < 0:
            raise ValueError(f"codes must be >= 0; got {codes}")
        self.weight = nn.Parameter(torch.zeros(kept, dim))
        self.codes = codes
        if codes:
            # int16 rows when they fit: half the bytes of int32 (the graph casts them before the row lookup)
            index_dtype = torch.int16 if kept <= torch.iinfo(torch.int16).max else torch.int32
            self.register_buffer("code_ids", torch.zeros(source_vocab, codes, dtype=index_dtype))
            # fp16: half the bytes of fp32; its rounding (≤ 5e-4 relative) is far below what a dropped id loses
            self.register_buffer("code_weights", torch.zeros(source_vocab, codes, dtype=torch.float16))
        else:
            # int32: half the bytes of int64 in the artifact, and ONNX Gather takes int32 indices
            self.register_buffer("id_map", torch.zeros(source_vocab, dtype=torch.int32))
        self.padding_idx = padding_idx
        self.embedding_dim = dim
        self.num_embeddings = kept

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not self.codes:
            return nn.functional.embedding(self.id_map[input_ids], self.weight)
        rows = nn.functional.embedding(self.code_ids[input_ids].long(), self.weight)  # (..., codes, dim)
        # torch.gather exports as GatherElements, which ONNX Runtime's int8 quantizer leaves alone: it rewrites every
        # Gather of a float table, and would round these weights (and fail on fp16 scales before opset 19)
        flat = input_ids.reshape(-1, 1).expand(-1, self.codes)
        weights = torch.gather(self.code_weights, 0, flat).reshape(*input_ids.shape, self.codes, 1)
        return (rows.float() * weights.float()).sum(-2).to(self.weight.dtype)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> RemappedEmbedding:
        """Keep `code_weights` fp16 through `.to(dtype)`, `.float()` and the like, which cast every float buffer:
        the checkpoint and the exported graph should store them at half the bytes whatever the weights' dtype."""
        super()._apply(fn, recurse)
        if self.codes and self.code_weights.dtype != torch.float16:
            self.code_weights = self.code_weights.half()
        return self


class CodedLookup(nn.Module):
    """The exported form of a coded `RemappedEmbedding`: the same function, a cheaper graph.

    Every id whose code is its own kept row (weight 1, the other slots 0: the kept ids) reads that row directly;
    only the other ids (the dropped ones, a real mix) gather their `codes` rows, found at run time (NonZero), mixed
    and written back over their positions (ScatterND). A sentence of kept words so pays one row lookup per token
    instead of `codes` (the per-id form cost ~0.9 ms of 4.2 at 128 tokens for 8 codes on the 3-layer MiniLM). Its
    tables cover the dropped ids only (`id_map` -1 - slot for them), a third less than the per-id codes.

    All rows, direct and coded, come from one Gather of `weight`, so that the int8 and int4 quantizers, which
    rewrite a table's Gather, see the table once.
    """

    def __init__(self, embedding: RemappedEmbedding) -> None:
        super().__init__()
        if not embedding.codes:
            raise ValueError("CodedLookup needs a RemappedEmbedding with codes")
        ids, weights = embedding.code_ids, embedding.code_weights
        direct = (weights[:, 0] == 1) & (weights[:, 1:] == 0).all(dim=1)
        mixed = (~direct).nonzero().squeeze(1)
        id_map = ids[:, 0].to(torch.int32)
        id_map[mixed] = -1 - torch.arange(len(mixed), dtype=torch.int32, device=id_map.device)
        self.weight = embedding.weight
        self.codes = embedding.codes
        self.register_buffer("id_map", id_map)
        self.register_buffer("code_ids", ids.index_select(0, mixed).clone())
        self.register_buffer("code_weights", weights.index_select(0, mixed).clone())
        self.register_buffer("code_columns", torch.zeros(1, self.codes, dtype=torch.long), persistent=False)
        self.register_buffer("zero", torch.zeros((), dtype=torch.int32), persistent=False)  # no Cast before Less

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # written for a short graph: int32 ids throughout (ONNX Gather takes them), one NonZero, constant shapes
        slots = self.id_map[input_ids.reshape(-1)]  # (tokens,) int32: a kept row, or -1 - slot of a mix
        mixed = (slots < self.zero).nonzero().reshape(-1)  # (n,) positions of the ids to mix
        slot = -1 - slots.index_select(0, mixed)  # (n,)
        rows = torch.cat([slots.clamp(min=0), self.code_ids.index_select(0, slot).to(slots.dtype).reshape(-1)])
        table = nn.functional.embedding(rows, self.weight)  # (tokens + n * codes, dim): the one lookup
        tokens, dim = slots.shape[0], self.weight.shape[1]
        direct, coded = table[:tokens], table[tokens:].reshape(-1, self.codes, dim)
        # torch.gather exports as GatherElements, which the int8 quantizer leaves alone (see RemappedEmbedding); its
        # index is the slot broadcast over the codes by an Add of zeros (an expand(-1, codes) traces to five nodes)
        index = slot.long().unsqueeze(1) + self.code_columns
        weights = torch.gather(self.code_weights, 0, index).unsqueeze(-1)  # (n, codes, 1)
        mix = (coded * weights.to(coded.dtype)).sum(1)  # (n, dim)
        return direct.index_put((mixed,), mix).reshape(*input_ids.shape, dim)
