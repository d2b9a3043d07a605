"""Retraining-free recovery: re-fit one scale per kept head and FFN neuron by least squares, layer by layer.

Kwon et al. 2022 ("A Fast Post-Training Pruning Framework for Transformers", §4.3, "mask tuning"): after units are
removed, each kept head h and neuron n gets a scale m, chosen so that the pruned layer's pre-LayerNorm sums match
the unpruned model's on a sample of sentences. A head's share of the attention output is C_h = ctx_h · W_oᵀ[h], a
neuron's share of the FFN output is a_n · W_out[:, n], both linear in m, so each fit is a small linear least-squares
problem; the scales are then folded into the columns of the output projection and of the FFN-out linear (biases
unchanged), and the exported graph is no bigger.

Which input the pruned layer sees: its *own running input* (the pruned model's previous layer output), not the
teacher's. The target is the teacher's pre-LayerNorm sum `x + sublayer(x)` at the same depth, so the fit also
absorbs the error carried in from earlier pruned layers (the residual term `x - x'` is part of what is fitted), as
in Kwon et al.'s layer-wise reconstruction; feeding the teacher's input would fit each layer in isolation and let
errors add up. Dropped layers are skipped: kept layer i is matched to the teacher layer with the same `source`.

Only the normal equations are accumulated (units × units), so the sample can be large: G = Σ_t C_tᵀC_t and
g = Σ_t C_tᵀe_t with e the error at m = 1. We solve (G + λI)·δ = g with `torch.linalg.lstsq`, m = 1 + δ; the ridge
λ (a small multiple of G's mean diagonal) pulls the scales towards 1 and keeps nearly collinear units stable, and
it can only lower the sample error: ‖e - Cδ‖² = ‖e‖² - δᵀGδ - 2λ‖δ‖².
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from compressor.arch.modules import HeadlessAttention
from compressor.arch.parts import (
    arch_of,
    encoder_layers,
    get_module,
    has_ffn,
    has_heads,
    head_size,
    model_inputs,
)
from compressor.arch.structure import ensure_structure, hidden_positions
from compressor.errors import DataError, PruneError

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
LayerCall = tuple[tuple[Any, ...], dict[str, Any]]  # the extra args and kwargs the encoder passes every layer


class _StopForward(Exception):
    """Raised by a hook once what it needs is captured, so the rest of the forward pass does not run."""


def reconstruct_(
    model: nn.Module,
    teacher: nn.Module,
    tokenizer: Any,
    data: Any,
    *,
    samples: int = 1024,
    batch_size: int = 32,
    max_length: int = 128,
    ridge: float = 1e-4,
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Re-fit one scale per kept head and FFN neuron so each pruned layer matches `teacher`; folds them in place.

    Args:
        teacher: the unpruned model (or any model of which `model`'s layers, heads and neurons are a subset).
        data: a LabelledData or a list of sentences; `samples` of them are drawn with `seed`.
        ridge: λ relative to the mean diagonal of the normal equations (pulls scales towards 1).
    Returns:
        A JSON-able report: per kept layer, the mean squared error of the attention and FFN pre-LayerNorm sums
        against the teacher's, before and after the fit, and the range of the fitted scales.
    """
    from tqdm.auto import tqdm

    if samples < 1 or batch_size < 1 or max_length < 2:
        raise PruneError("reconstruct_: `samples`, `batch_size` and `max_length` must be positive")
    start = time.perf_counter()
    arch = arch_of(model)
    device = next(model.parameters()).device
    t_device = next(teacher.parameters()).device
    batches = _batches(
        tokenizer,
        data,
        samples=samples,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        inputs=model_inputs(model),
    )
    masks = [b["attention_mask"].to(device).bool() for b in batches]  # (batch, seq) real tokens
    tokens = int(sum(int(m.sum()) for m in masks))
    teacher_index = {int(e["source"]): j for j, e in enumerate(ensure_structure(teacher)["layers"])}
    width_index = hidden_positions(ensure_structure(model), ensure_structure(teacher))  # a width-pruned student
    student_layers, teacher_layers = encoder_layers(model), encoder_layers(teacher)
    report_layers: list[dict[str, Any]] = []
    was_training = model.training, teacher.training
    model.eval()
    teacher.eval()
    try:
        with torch.no_grad():
            s_states, s_calls = _first_layer_inputs(model, batches, device)
            t_states, t_calls = _first_layer_inputs(teacher, batches, t_device)
            t_next = 0
            progress = tqdm(
                list(enumerate(student_layers)),
                desc="reconstructing layers",
                disable=quiet or not logger.isEnabledFor(logging.INFO),
            )
            for i, block in progress:
                source = int(ensure_structure(model)["layers"][i]["source"])
                j = teacher_index.get(source)
                if j is None or j < t_next:
                    raise PruneError(
                        f"layer {i} (source {source}) has no matching layer in the teacher, or the teacher's layers "
                        "are in another order; reconstruct against the unpruned model"
                    )
                for k in range(t_next, j):  # teacher layers the student dropped: run them, nothing to match
                    t_states = _run_layer(teacher_layers[k], t_states, t_calls)
                t_attn, t_ffn, t_states = _teacher_targets(teacher_layers[j], t_states, t_calls, arch, device)
                if width_index is not None:  # the teacher's sums at the student's dimensions
                    t_attn = [x[..., width_index] for x in t_attn]
                    t_ffn = [x[..., width_index] for x in t_ffn]
                t_next = j + 1
                entry: dict[str, Any] = {"layer": i, "source": source, "teacher_layer": j}
                entry["attention"] = _fit_heads_(
                    block, s_states, s_calls, t_attn, masks, arch, head_size(model), ridge
                )
                entry["ffn"] = _fit_neurons_(block, s_states, s_calls, t_ffn, masks, arch, ridge)
                report_layers.append(entry)
                s_states = _run_layer(block, s_states, s_calls)
                del t_attn, t_ffn
    finally:
        model.train(was_training[0])
        teacher.train(was_training[1])
    seconds = time.perf_counter() - start
    logger.info(
        "reconstructed %d layers on %d sentences (%d tokens) in %.1fs",
        len(report_layers),
        sum(len(m) for m in masks),
        tokens,
        seconds,
    )
    return {
        "samples": sum(len(m) for m in masks),
        "tokens": tokens,
        "ridge": ridge,
        "seconds": round(seconds, 2),
        "layers": report_layers,
    }


def _texts(data: Any, samples: int, seed: int) -> tuple[list[str], list[str] | None]:
    if isinstance(data, (list, tuple)):
        texts = [str(t) for t in data]
        if len(texts) > samples:
            texts = random.Random(seed).sample(texts, samples)
        return texts, None
    subset = data.sample(samples, seed=seed)
    return subset.texts, subset.text_pairs


def _batches(
    tokenizer: Any, data: Any, *, samples: int, batch_size: int, max_length: int, seed: int, inputs: tuple[str, ...]
) -> list[Batch]:
    """Tokenised batches of the sample (only the model's `inputs`), sorted by length so that little of each batch
    is padding."""
    texts, pairs = _texts(data, samples, seed)
    if not texts:
        raise DataError("reconstruction needs at least one sentence of training data")
    rows = list(zip(texts, pairs, strict=True)) if pairs else [(t, None) for t in texts]
    lengths = [
        len(r)
        for r in tokenizer(
            [t for t, _ in rows], [p for _, p in rows] if pairs else None, truncation=True, max_length=max_length
        )["input_ids"]
    ]
    order = sorted(range(len(rows)), key=lambda i: lengths[i])
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[start : start + batch_size]]
        enc = tokenizer(
            [t for t, _ in chunk],
            [p for _, p in chunk] if pairs else None,
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        batches.append({k: v for k, v in enc.items() if k in inputs})
    return batches


def _first_layer_inputs(
    model: nn.Module, batches: list[Batch], device: torch.device
) -> tuple[list[torch.Tensor], list[LayerCall]]:
    """Per batch, the hidden states entering encoder layer 0 and the other arguments the encoder passes layers.

    Capturing the call (attention mask in whatever form this attention implementation wants, and so on) from the
    model's own forward keeps this independent of how transformers prepares masks.
    """
    states: list[torch.Tensor] = []
    calls: list[LayerCall] = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        states.append(args[0])
        calls.append((args[1:], dict(kwargs)))
        raise _StopForward

    handle = encoder_layers(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(**{k: v.to(device) for k, v in batch.items()})
            except _StopForward:
                pass
    finally:
        handle.remove()
    return states, calls


def _run_layer(block: nn.Module, states: Sequence[torch.Tensor], calls: Sequence[LayerCall]) -> list[torch.Tensor]:
    return [_hidden(block(h, *args, **kwargs)) for h, (args, kwargs) in zip(states, calls, strict=True)]


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _run_until(block: nn.Module, last: nn.Module, h: torch.Tensor, args: tuple, kwargs: dict[str, Any]) -> None:
    """Run `block` on `h` up to and including the module `last` (hooks registered earlier still fire)."""

    def stop(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        raise _StopForward

    handle = last.register_forward_hook(stop)
    try:
        block(h, *args, **kwargs)
    except _StopForward:
        pass
    finally:
        handle.remove()


@contextmanager
def _inputs_of(*modules: nn.Module) -> Iterator[list[list[torch.Tensor]]]:
    """Record the first positional input of each module on every call."""
    store: list[list[torch.Tensor]] = [[] for _ in modules]
    handles = [
        m.register_forward_hook(lambda mod, args, out, s=s: s.append(args[0]))
        for m, s in zip(modules, store, strict=True)
    ]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _attn_norm(block: nn.Module, arch: Any) -> nn.Module:
    attention = get_module(block, arch.attention)
    return attention.LayerNorm if isinstance(attention, HeadlessAttention) else get_module(block, arch.attn_norm)


def _has_heads(block: nn.Module, arch: Any) -> bool:
    return has_heads(block, arch)


def _has_ffn(block: nn.Module, arch: Any) -> bool:
    return has_ffn(block, arch)


def _teacher_targets(
    block: nn.Module, states: list[torch.Tensor], calls: list[LayerCall], arch: Any, device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The teacher layer's pre-LayerNorm sums (attention, FFN) on the sample, and its outputs."""
    attn, ffn, out = [], [], []
    for h, (args, kwargs) in zip(states, calls, strict=True):
        with _inputs_of(_attn_norm(block, arch), get_module(block, arch.ffn_norm)) as (a, f):
            out.append(_hidden(block(h, *args, **kwargs)))
        attn.append(a[0].to(device))
        ffn.append(f[0].to(device))
    return attn, ffn, out


def _solve(gram: torch.Tensor, g: torch.Tensor, error: float, count: int, ridge: float) -> tuple[torch.Tensor, dict]:
    """δ = argmin ‖e - Cδ‖² + λ‖δ‖² from the normal equations; the scales are 1 + δ."""
    n = gram.shape[0]
    lam = ridge * float(gram.diagonal().mean().clamp_min(1e-12))
    delta = torch.linalg.lstsq(gram + lam * torch.eye(n, dtype=gram.dtype), g.unsqueeze(1)).solution.squeeze(1)
    after = error - 2 * float(delta @ g) + float(delta @ gram @ delta)
    scales = 1 + delta
    return scales, {
        "before": error / max(count, 1),
        "after": max(after, 0.0) / max(count, 1),
        "scale_min": float(scales.min()),
        "scale_max": float(scales.max()),
    }


def _fit_heads_(
    block: nn.Module,
    states: list[torch.Tensor],
    calls: list[LayerCall],
    targets: list[torch.Tensor],
    masks: list[torch.Tensor],
    arch: Any,
    d: int,
    ridge: float,
) -> dict[str, Any] | None:
    """Fit one scale per kept head of `block` and fold it into the output projection's columns."""
    if not _has_heads(block, arch):
        return None
    o = get_module(block, arch.attn_out)
    hidden, n = o.out_features, o.in_features // d
    w = o.weight.detach().float().view(hidden, n, d)  # (hidden, heads, head_dim)
    gram = torch.zeros(n, n, dtype=torch.float64)
    g = torch.zeros(n, dtype=torch.float64)
    error, count = 0.0, 0
    for h, (args, kwargs), target, mask in zip(states, calls, targets, masks, strict=True):
        with _inputs_of(o, _attn_norm(block, arch)) as (ctx, pre):
            _run_until(block, _attn_norm(block, arch), h, args, kwargs)  # the FFN is not needed here
        x = ctx[0][mask].float().view(-1, n, d)  # (tokens, heads, head_dim)
        c = torch.einsum("tnd,hnd->tnh", x, w)  # (tokens, heads, hidden): each head's share of o(ctx)
        e = (target[mask] - pre[0][mask]).float()  # (tokens, hidden): teacher sum minus ours at m = 1
        gram += torch.einsum("tnh,tkh->nk", c, c).double().cpu()
        g += torch.einsum("tnh,th->n", c, e).double().cpu()
        error += float(e.double().pow(2).sum())
        count += e.numel()
    scales, fit = _solve(gram, g, error, count, ridge)
    with torch.no_grad():
        o.weight.view(hidden, n, d).mul_(scales.to(o.weight.device, o.weight.dtype).view(1, n, 1))
    return fit | {"units": n}


def _fit_neurons_(
    block: nn.Module,
    states: list[torch.Tensor],
    calls: list[LayerCall],
    targets: list[torch.Tensor],
    masks: list[torch.Tensor],
    arch: Any,
    ridge: float,
) -> dict[str, Any] | None:
    """Fit one scale per kept FFN neuron of `block` and fold it into the FFN-out linear's columns."""
    if not _has_ffn(block, arch):
        return None
    out = get_module(block, arch.ffn_out)
    w = out.weight.detach().float()  # (hidden, neurons)
    n = w.shape[1]
    act_gram = torch.zeros(n, n, dtype=torch.float64)
    g = torch.zeros(n, dtype=torch.float64)
    error, count = 0.0, 0
    for h, (args, kwargs), target, mask in zip(states, calls, targets, masks, strict=True):
        with _inputs_of(out, get_module(block, arch.ffn_norm)) as (act, pre):
            block(h, *args, **kwargs)
        a = act[0][mask].float()  # (tokens, neurons)
        e = (target[mask] - pre[0][mask]).float()  # (tokens, hidden)
        act_gram += (a.T @ a).double().cpu()
        g += ((e @ w) * a).sum(0).double().cpu()  # Σ_t a_tn · ⟨W[:, n], e_t⟩
        error += float(e.double().pow(2).sum())
        count += e.numel()
    gram = act_gram * (w.T @ w).double().cpu()  # ⟨a_n W_n, a_k W_k⟩ summed over tokens
    scales, fit = _solve(gram, g, error, count, ridge)
    with torch.no_grad():
        out.weight.mul_(scales.to(out.weight.device, out.weight.dtype).view(1, n))
    return fit | {"units": n}
