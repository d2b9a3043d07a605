"""Vocabulary pruning: keep only the embedding rows of token ids the task's data uses.

The tokenizer is not changed. The embedding becomes a `RemappedEmbedding` whose `id_map` sends each original id
to its new row (ids never seen map to the unknown-token row, or the nearest kept row), or, with the `sparse`
fallback, whose codes make each dropped id a weighted sum of a few kept rows; that lookup is exported into the
ONNX graph.
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
from compressor.prune.config import FALLBACKS, MAX_VOCAB_CODES


@dataclass
class VocabReport:
    source_size: int
    kept: int
    embedding_bytes_before: int
    embedding_bytes_after: int  # the kept rows plus the id map (int32 per source id) or the codes (sparse)


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


def prune_vocab_(
    model: nn.Module, keep_ids: Iterable[int], unk_id: int, *, fallback: str = "unk", codes: int = 8
) -> VocabReport:
    """Keep the embedding rows of `keep_ids` (+ `unk_id`); remap every other id.

    Args:
        fallback: where a dropped id goes: `unk`, the unknown-token row; `nearest`, the kept row whose original
            embedding is closest to the dropped one's (cosine), e.g. "ingenious" → "clever", which keeps more of
            an unseen word's meaning than [UNK] at no size cost (the id map has one entry per id either way);
            `sparse`, a weighted sum of `codes` kept rows fitted to the dropped row (`sparse_codes`), closer still,
            for `codes` int16 ids and fp16 weights per source id instead of one int32.
        codes: with `sparse`, the kept rows per dropped id (1 to 64); ignored otherwise.
    """
    if fallback not in FALLBACKS:
        raise PruneError(f"vocabulary fallback must be one of {', '.join(FALLBACKS)}; got {fallback!r}")
    if fallback == "sparse" and not 1 <= codes <= MAX_VOCAB_CODES:
        raise PruneError(f"sparse vocabulary codes must be between 1 and {MAX_VOCAB_CODES}; got {codes!r}")
    arch = arch_of(model)
    emb = get_module(model, arch.word_embeddings)
    if isinstance(emb, RemappedEmbedding):
        raise PruneError("the vocabulary of this model is already pruned")
    source_size, dim = emb.weight.shape
    keep = sorted({int(i) for i in keep_ids} | {int(unk_id)})
    if keep[0] < 0 or keep[-1] >= source_size:
        raise PruneError(f"token ids to keep must lie in [0, {source_size}); got {keep[0]}..{keep[-1]}")
    index = torch.tensor(keep, dtype=torch.long, device=emb.weight.device)
    if fallback == "sparse":
        return _prune_vocab_sparse_(model, emb, index, codes)
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


def _prune_vocab_sparse_(model: nn.Module, emb: nn.Module, index: torch.Tensor, codes: int) -> VocabReport:
    """The `sparse` fallback: kept ids keep their row (code [row, 0, …], weights [1, 0, …]); every dropped id gets
    the `codes` kept rows and least-squares weights that best rebuild its current embedding row."""
    weight = emb.weight.detach()
    source_size, dim = weight.shape
    device = weight.device
    new = RemappedEmbedding(source_size, len(index), dim, codes=codes).to(device, weight.dtype)
    code_ids = torch.zeros(source_size, codes, dtype=torch.long, device=device)
    code_weights = torch.zeros(source_size, codes, dtype=torch.float32, device=device)
    code_ids[index, 0] = torch.arange(len(index), device=device)
    code_weights[index, 0] = 1.0
    dropped = torch.ones(source_size, dtype=torch.bool, device=device)
    dropped[index] = False
    dropped_ids = dropped.nonzero().squeeze(1)
    if len(dropped_ids):
        code_ids[dropped_ids], code_weights[dropped_ids] = sparse_codes(weight, index, dropped_ids, codes)
    fp16_max = torch.finfo(torch.float16).max  # an ill-conditioned fit must not turn into inf in the fp16 buffer
    with torch.no_grad():
        new.weight.copy_(weight.index_select(0, index))
        new.code_ids.copy_(code_ids)
        new.code_weights.copy_(code_weights.clamp(-fp16_max, fp16_max))
    new.weight.requires_grad_(emb.weight.requires_grad)
    set_module(model, arch_of(model).word_embeddings, new)
    ensure_structure(model)["vocab"] = {"source_size": int(source_size), "kept": len(index), "codes": codes}
    elem = weight.element_size()
    buffers = sum(b.numel() * b.element_size() for b in (new.code_ids, new.code_weights))  # the codes
    return VocabReport(source_size, len(index), source_size * dim * elem, len(index) * dim * elem + buffers)


def sparse_codes(
    weight: torch.Tensor, kept: torch.Tensor, dropped: torch.Tensor, codes: int, *, chunk: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write each row `weight[dropped]` as a combination of `codes` rows `weight[kept]` by orthogonal matching
    pursuit (Pati, Rezaiifar & Krishnaprasad 1993): at each step add the kept row (unit-normalised for the choice)
    most correlated with the residual, then refit the weights of all chosen rows by least squares.

    Written here, batched in torch, because scikit-learn's `orthogonal_mp` fits the targets one by one (slow for
    the ~20k ids a vocabulary prune drops) and the one batched torch OMP package on PyPI
    (orthogonal-matching-pursuit-gpu, 0.1.x in 2026) is too young to depend on for these few lines.

    Returns:
        (ids, coefs), both (len(dropped), codes): positions in `kept` (long) and their weights (float32). With
        fewer kept rows than `codes`, the surplus slots hold position 0 with weight 0.
    """
    dictionary = weight.detach().float().index_select(0, kept)  # (K, d)
    unit = nn.functional.normalize(dictionary, dim=1)
    steps = min(codes, len(kept))
    ids = torch.zeros(len(dropped), codes, dtype=torch.long, device=weight.device)
    coefs = torch.zeros(len(dropped), codes, dtype=torch.float32, device=weight.device)
    ridge = 1e-6 * torch.eye(steps, dtype=torch.float64, device=weight.device)
    chunk = max(1, min(chunk, 2**26 // max(steps * dictionary.shape[1], 1)))  # chosen rows: ≤ 256 MB of fp32
    for start in range(0, len(dropped), chunk):
        target = weight.detach().float().index_select(0, dropped[start : start + chunk])  # (n, d)
        chosen = torch.zeros(len(target), steps, dtype=torch.long, device=weight.device)
        residual = target
        coef = torch.zeros(len(target), 0, device=weight.device)
        for t in range(steps):
            score = (residual @ unit.T).abs()  # (n, K)
            if t:
                score.scatter_(1, chosen[:, :t], -1.0)  # each kept row at most once
            chosen[:, t] = score.argmax(dim=1)
            atoms = dictionary[chosen[:, : t + 1]]  # (n, t+1, d)
            gram = (atoms @ atoms.transpose(1, 2)).double() + ridge[: t + 1, : t + 1]
            rhs = (atoms @ target.unsqueeze(-1)).double()  # (n, t+1, 1)
            coef = torch.linalg.solve(gram, rhs).squeeze(-1).float()  # (n, t+1): normal equations, in fp64
            residual = target - (coef.unsqueeze(1) @ atoms).squeeze(1)
        ids[start : start + chunk, :steps] = chosen
        coefs[start : start + chunk, :steps] = coef
    return ids, coefs


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
