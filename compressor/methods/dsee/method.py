"""DSEE: find the sparse support data-free, inject the adapters, merge them; the optional pruning steps.

Support (DSEE §3.1): W0 is split into a low-rank part and a sparse residual, W0 ≈ L + S, by alternating a
low-rank fit of (W0 − S) through a QR bilateral sketch with hard thresholding of the residual into S, the sketch
growing a few directions per outer iteration up to a rank cap (greedy, in the spirit of GreBsmo, Zhou & Tao 2013).
M = the N entries of largest |S|. DSEE's reference code grows the rank without a cap (5 per iteration, 100
iterations); we cap it at `decompose_rank` (default: the adapter rank r, so S holds what B·A cannot reach): a
near-full-rank L absorbs the very spikes S should expose, and the wide QRs are far slower on a CPU.

Everything depends on W0 and `seed` only, so `inject` is deterministic; the chosen indices are also stored as a
buffer, so a saved adapter restores its support exactly even where floating point differs between machines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from compressor.arch.parts import arch_of, encoder_layers, encoder_linears, head_size, zero_smallest_
from compressor.arch.structure import ensure_structure, structure_of
from compressor.arch.surgery import prune_heads_
from compressor.arch.table import LINEAR_ROLES
from compressor.errors import PruneError
from compressor.methods.base import wrap_
from compressor.methods.dsee.config import DseeConfig
from compressor.methods.dsee.layers import DseeLinear

logger = logging.getLogger(__name__)

SWEEPS = 2  # alternations of (low-rank fit, threshold) per outer iteration, as in DSEE's reference code


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread: LAPACK QR of a thin matrix is latency-bound, and with two threads on a busy CPU
    it ran 40× slower here. Fixing the thread count also makes the result independent of the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def decompose(
    weight: torch.Tensor,
    *,
    max_rank: int,
    threshold: float,
    iterations: int,
    rank_step: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """W ≈ L + S, rank(L) ≤ `max_rank` (grown `rank_step` directions per iteration), S = residual above `threshold`.

    Returns (L, S), both (out, in). Each sweep: X = QR((W − S)·Yᵀ).Q, Y = Xᵀ(W − S), L = X·Y, S = H_τ(W − L).
    After the sweeps the row sketch Y grows by a random projection of what neither part explains yet; once the
    rank cap is reached the remaining iterations alternate at that rank (GoDec).
    """
    with _one_thread():
        w = weight.detach().float()  # (m, n)
        m, n = w.shape
        cap = min(max_rank, m, n)
        sparse = torch.zeros_like(w)  # (m, n)
        low_rank = torch.zeros_like(w)  # (m, n)
        y = torch.randn(min(rank_step, cap), n, generator=generator).to(w)  # (q, n) row sketch
        for _ in range(iterations):
            for _ in range(SWEEPS):
                target = w - sparse  # (m, n)
                x = torch.linalg.qr(target @ y.T).Q  # (m, q) orthonormal column basis
                y = x.T @ target  # (q, n)
                low_rank = x @ y  # (m, n)
                residual = w - low_rank
                sparse = residual * (residual.abs() >= threshold)  # hard threshold H_τ
            if y.shape[0] < cap:
                unexplained = w - low_rank - sparse  # (m, n)
                sketch = torch.randn(min(rank_step, cap - y.shape[0]), m, generator=generator).to(w)  # (grow, m)
                y = torch.cat([y, sketch @ unexplained])  # (q + grow, n)
    return low_rank, sparse


@torch.no_grad()
def find_support(weight: torch.Tensor, cfg: DseeConfig, generator: torch.Generator) -> torch.Tensor:
    """Flat indices (sorted, distinct) of the N support entries of one (out, in) weight matrix."""
    numel = weight.numel()
    n = min(cfg.support_size, numel)
    if n == 0:  # low-rank only: no support to find
        return torch.zeros(0, dtype=torch.long)
    if cfg.support == "random":
        return torch.randperm(numel, generator=generator)[:n].sort().values
    if cfg.support == "magnitude":
        score = weight.detach().float().abs()
    else:
        low_rank, _ = decompose(
            weight,
            max_rank=cfg.decompose_rank or cfg.rank,
            threshold=cfg.threshold,
            iterations=cfg.iterations,
            rank_step=cfg.rank_step,
            generator=generator,
        )
        # |W − L| equals |S| wherever S ≠ 0 and ranks the rest too, so this is "the N largest |S|" and still
        # gives N entries when fewer than N residuals pass the threshold.
        score = (weight.detach().float() - low_rank).abs()
    return torch.topk(score.reshape(-1).cpu(), n).indices.sort().values


def inject_dsee(model: nn.Module, cfg: DseeConfig) -> nn.Module:
    """Freeze the model, wrap each target projection in a `DseeLinear`; A, B, S and the classifier train."""
    linears = encoder_linears(model, cfg.targets)
    if cfg.unstructured_sparsity > 0 and linears:
        others = [r for r in LINEAR_ROLES if r not in cfg.targets]
        zeroed = dsee_magnitude_prune_(model, cfg.unstructured_sparsity, others)
        logger.info("DSEE: zeroed %s smallest-|w| entries of %s", f"{zeroed:,}", ", ".join(others))
    generator = torch.Generator().manual_seed(cfg.seed)

    def make(name: str, linear: nn.Linear) -> DseeLinear:
        return DseeLinear(linear, cfg.rank, cfg.scale, find_support(linear.weight, cfg, generator), generator)

    count = wrap_(model, linears, make, layers=(DseeLinear,), what="DSEE")
    logger.info(
        "DSEE: %d projections adapted (rank %d, %d sparse entries each, support `%s`)",
        count,
        cfg.rank,
        cfg.support_size,
        cfg.support,
    )
    return model


@torch.no_grad()
def dsee_magnitude_prune_(
    model: nn.Module, sparsity: float, roles: list[str] | tuple[str, ...] = ("key", "attn_out", "ffn_in", "ffn_out")
) -> int:
    """Zero the `sparsity` share of smallest-|w| entries of each encoder linear playing one of `roles`.

    DSEE's unstructured step (magnitude masks on the linears that carry no adapter). Works on a plain or merged
    model; returns how many entries were zeroed. Ties at the cut are broken by `topk`, deterministically.
    """
    if not 0 <= sparsity < 1:
        raise PruneError(f"`sparsity` must be in [0, 1), got {sparsity!r}")
    zeroed = 0
    for _, linear in encoder_linears(model, list(roles)):
        zeroed += int((~zero_smallest_(linear.weight, linear.weight.abs(), sparsity)).sum())
    return zeroed


def default_heads_to_prune(num_heads: int) -> int:
    """DSEE removes 3 of BERT-base's 12 heads per layer; the same share of another head count, rounded."""
    return round(3 * num_heads / 12)


@torch.no_grad()
def dsee_head_scores(
    model: nn.Module, base: nn.Module | None = None, roles: tuple[str, ...] = ("query", "value")
) -> list[torch.Tensor]:
    """Per encoder layer, the score of each current head: Σ|ΔW| over its rows of the `roles` projections.

    ΔW comes from the DSEE adapters of an unmerged model, or, for a merged model, from `base` (the pretrained
    model with the same structure): ΔW = W_merged − W0. Layers without heads get an empty tensor.
    """
    arch = arch_of(model)
    d = head_size(model)
    heads = [len(e["heads"]) for e in ensure_structure(model)["layers"]]
    base_layers = encoder_layers(base) if base is not None else None
    scores, found = [], 0
    for i, layer in enumerate(encoder_layers(model)):
        score = torch.zeros(heads[i])
        for role in roles:
            path = getattr(arch, role)
            try:
                module = layer.get_submodule(path)
            except AttributeError:  # a layer without heads
                continue
            if isinstance(module, DseeLinear):
                delta = module.delta_weight()
            elif base_layers is not None:
                reference = base_layers[i].get_submodule(path)
                if reference.weight.shape != module.weight.shape:
                    raise PruneError(
                        f"layer {i} `{path}`: base has shape {tuple(reference.weight.shape)}, "
                        f"model {tuple(module.weight.shape)}; pass the base with the same structure"
                    )
                delta = module.weight - reference.weight
            else:
                continue
            found += 1
            # rows of head h are [h·d, (h+1)·d)
            score += delta.abs().float().reshape(heads[i], d, -1).sum(dim=(1, 2)).cpu()  # (heads,)
        scores.append(score)
    if not found:
        raise PruneError("no ΔW to score heads by: pass a model with DSEE adapters, or the merged model and its base")
    return scores


def dsee_prune_heads_(model: nn.Module, scores: list[torch.Tensor], k: int | None = None) -> list[list[int]]:
    """DSEE's structured step: remove the `k` lowest-scoring heads of every layer (at least one head stays).

    Args:
        model: a merged DSEE model (stock modules); surgery cannot cut through adapter wrappers.
        scores: `dsee_head_scores(...)`, per layer one score per current head.
        k: heads removed per layer; default 3 of 12, scaled to the head count.

    Returns the original ids of the heads each layer keeps. Retrain afterwards (e.g. inject DSEE again).
    """
    if any(isinstance(m, DseeLinear) for m in model.modules()):
        raise PruneError("merge the DSEE adapters first (`merge`); take dsee_head_scores before merging")
    structure = ensure_structure(model)
    if k is None:
        k = default_heads_to_prune(structure["source_heads"])
    if k < 0:
        raise PruneError(f"`k` must be a non-negative integer, got {k!r}")
    if len(scores) != len(structure["layers"]):
        raise PruneError(f"{len(scores)} score rows for {len(structure['layers'])} layers")
    for i, score in enumerate(scores):
        n = len(structure["layers"][i]["heads"])
        if score.numel() != n:
            raise PruneError(f"layer {i}: {score.numel()} head scores for {n} heads")
        if n == 0:
            continue
        order = torch.sort(score, descending=True, stable=True).indices  # most important first
        prune_heads_(model, i, sorted(order[: n - min(k, n - 1)].tolist()))
    kept = [e["heads"] for e in structure_of(model)["layers"]]
    logger.info("DSEE: heads kept per layer %s", [len(h) for h in kept])
    return kept
