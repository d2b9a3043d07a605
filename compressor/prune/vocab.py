"""Vocabulary pruning: keep only the embedding rows of token ids the task's data uses.

The tokenizer is not changed. The embedding becomes a `RemappedEmbedding` whose `id_map` sends each original id
to its new row (ids never seen map to the unknown-token row), and that lookup is exported into the ONNX graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compressor.errors import PruneError
from compressor.models import arch_of, get_module, set_module
from compressor.prune.modules import RemappedEmbedding
from compressor.prune.structure import ensure_structure


@dataclass
class VocabReport:
    source_size: int
    kept: int
    embedding_bytes_before: int
    embedding_bytes_after: int  # the kept rows plus the id map (int64 per source id)


def used_token_ids(tokenizer: Any, texts: Iterable[str], *, batch_size: int = 1000) -> set[int]:
    """Every token id the tokenizer produces on `texts`, plus all special-token ids."""
    ids: set[int] = set(int(i) for i in tokenizer.all_special_ids)
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            for row in tokenizer(batch, truncation=True)["input_ids"]:
                ids.update(row)
            batch = []
    if batch:
        for row in tokenizer(batch, truncation=True)["input_ids"]:
            ids.update(row)
    return ids


def prune_vocab_(model: nn.Module, keep_ids: Iterable[int], unk_id: int) -> VocabReport:
    """Keep the embedding rows of `keep_ids` (+ `unk_id`); remap every other id to the unknown row."""
    arch = arch_of(model)
    emb = get_module(model, arch.word_embeddings)
    if isinstance(emb, RemappedEmbedding):
        raise PruneError("the vocabulary of this model is already pruned")
    source_size, dim = emb.weight.shape
    keep = sorted({int(i) for i in keep_ids} | {int(unk_id)})
    if keep[0] < 0 or keep[-1] >= source_size:
        raise PruneError(f"token ids to keep must lie in [0, {source_size}); got {keep[0]}..{keep[-1]}")
    index = torch.tensor(keep, dtype=torch.long, device=emb.weight.device)
    new = RemappedEmbedding(source_size, len(keep), dim).to(emb.weight.device, emb.weight.dtype)
    id_map = torch.full((source_size,), keep.index(int(unk_id)), dtype=torch.long, device=emb.weight.device)
    id_map[index] = torch.arange(len(keep), device=emb.weight.device)
    with torch.no_grad():
        new.weight.copy_(emb.weight.index_select(0, index))
        new.id_map.copy_(id_map)
    new.weight.requires_grad_(emb.weight.requires_grad)
    set_module(model, arch.word_embeddings, new)
    ensure_structure(model)["vocab"] = {"source_size": int(source_size), "kept": len(keep)}
    elem = emb.weight.element_size()
    after = len(keep) * dim * elem + new.id_map.numel() * new.id_map.element_size()  # kept rows + the id map
    return VocabReport(source_size, len(keep), source_size * dim * elem, after)


def build_vocab_shape_(model: nn.Module, vocab: dict[str, Any]) -> None:
    """Give a freshly built model the pruned embedding shape recorded in its structure."""
    arch = arch_of(model)
    emb = get_module(model, arch.word_embeddings)
    dim = emb.weight.shape[1]
    set_module(model, arch.word_embeddings, RemappedEmbedding(int(vocab["source_size"]), int(vocab["kept"]), dim))


def unknown_rate(model: nn.Module, tokenizer: Any, texts: Iterable[str], pairs: Iterable[str] | None = None) -> float:
    """Share of the tokens fed to the model for `texts` (special tokens included) that the pruned vocabulary maps
    to the unknown row, not counting tokens the tokenizer itself made [UNK]."""
    emb = get_module(model, arch_of(model).word_embeddings)
    if not isinstance(emb, RemappedEmbedding):
        return 0.0
    id_map = emb.id_map.cpu()
    unk_row = int(id_map[tokenizer.unk_token_id])
    total = fallback = 0
    encoded = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True)
    for row in encoded["input_ids"]:
        ids = torch.tensor(row, dtype=torch.long)
        total += len(row)
        fallback += int(((id_map[ids] == unk_row) & (ids != tokenizer.unk_token_id)).sum())
    return fallback / max(total, 1)


def model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (what the weights file and the exported initialisers hold)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
