"""Vocabulary pruning: keep only the embedding rows of token ids the task's data uses.

The tokenizer is not changed. The embedding becomes a `RemappedEmbedding` whose `id_map` sends each original id
to its new row (ids never seen map to the unknown-token row), and that lookup is exported into the ONNX graph.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compressor.arch.modules import RemappedEmbedding
from compressor.arch.parts import arch_of, get_module, set_module
from compressor.arch.structure import ensure_structure
from compressor.errors import PruneError
from compressor.prune.config import FALLBACKS


@dataclass
class VocabReport:
    source_size: int
    kept: int
    embedding_bytes_before: int
    embedding_bytes_after: int  # the kept rows plus the id map (int32 per source id)


def used_token_ids(
    tokenizer: Any, texts: Iterable[str], pairs: Iterable[str] | None = None, *, batch_size: int = 1000
) -> set[int]:
    """Every token id the tokenizer produces on `texts` and the second texts `pairs` (each on its own), plus all
    special-token ids."""
    ids: set[int] = set(int(i) for i in tokenizer.all_special_ids)
    batch: list[str] = []
    for text in itertools.chain(texts, pairs or ()):
        batch.append(text)
        if len(batch) >= batch_size:
            for row in tokenizer(batch, truncation=True)["input_ids"]:
                ids.update(row)
            batch = []
    if batch:
        for row in tokenizer(batch, truncation=True)["input_ids"]:
            ids.update(row)
    return ids


def prune_vocab_(model: nn.Module, keep_ids: Iterable[int], unk_id: int, *, fallback: str = "unk") -> VocabReport:
    """Keep the embedding rows of `keep_ids` (+ `unk_id`); remap every other id.

    Args:
        fallback: where a dropped id goes: `unk`, the unknown-token row; `nearest`, the kept row whose original
            embedding is closest to the dropped one's (cosine), e.g. "ingenious" → "clever", which keeps more of
            an unseen word's meaning than [UNK] at no size cost (the id map has one entry per id either way).
    """
    if fallback not in FALLBACKS:
        raise PruneError(f"vocabulary fallback must be one of {', '.join(FALLBACKS)}; got {fallback!r}")
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
    id_map = torch.full((source_size,), keep.index(int(unk_id)), dtype=torch.int32, device=emb.weight.device)
    id_map[index] = torch.arange(len(keep), dtype=torch.int32, device=emb.weight.device)
    if fallback == "nearest":
        dropped = torch.ones(source_size, dtype=torch.bool, device=emb.weight.device)
        dropped[index] = False
        id_map[dropped] = _nearest_rows(emb.weight.detach(), index, dropped.nonzero().squeeze(1)).to(torch.int32)
    with torch.no_grad():
        new.weight.copy_(emb.weight.index_select(0, index))
        new.id_map.copy_(id_map)
    new.weight.requires_grad_(emb.weight.requires_grad)
    set_module(model, arch.word_embeddings, new)
    ensure_structure(model)["vocab"] = {"source_size": int(source_size), "kept": len(keep)}
    elem = emb.weight.element_size()
    after = len(keep) * dim * elem + new.id_map.numel() * new.id_map.element_size()  # kept rows + the id map
    return VocabReport(source_size, len(keep), source_size * dim * elem, after)


def _nearest_rows(weight: torch.Tensor, kept: torch.Tensor, dropped: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """For each dropped id, the position (in `kept`) of the kept embedding with the highest cosine similarity."""
    unit = nn.functional.normalize(weight.float(), dim=1)
    kept_unit = unit[kept]
    out = torch.empty(len(dropped), dtype=torch.long, device=weight.device)
    for start in range(0, len(dropped), chunk):
        rows = unit[dropped[start : start + chunk]]
        out[start : start + chunk] = (rows @ kept_unit.T).argmax(dim=1)
    return out


def unknown_rate(
    tokenizer: Any, kept_ids: Iterable[int], texts: Iterable[str], pairs: Iterable[str] | None = None
) -> float:
    """Share of the tokens fed to the model for `texts` (special tokens included) whose ids the pruned vocabulary
    dropped, i.e. that fall back to the unknown row (or to the nearest kept row); tokens the tokenizer itself
    made [UNK] are not counted."""
    kept = set(kept_ids) | {tokenizer.unk_token_id}
    total = fallback = 0
    encoded = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True)
    for row in encoded["input_ids"]:
        total += len(row)
        fallback += sum(1 for i in row if i not in kept)
    return fallback / max(total, 1)


def model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (what the weights file and the exported initialisers hold)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
