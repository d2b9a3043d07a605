"""Head and FFN-neuron mask variables ξ, put into a model with forward pre-hooks, and the batches they see.

A head mask multiplies each head's slice of the attention context just before the output projection; a neuron
mask multiplies the FFN activation just before the FFN-out linear. Both hook the input of a module found through
the architecture table, so they work on pruned models (non-uniform widths; layers without heads or FFN are
skipped) and never use transformers' `head_mask` argument. Masks are per example, shape (batch, units), so one
backward pass yields every example's own ∂L/∂ξ (what `head-gradient` and `fisher` accumulate).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compressor.arch.parts import (
    arch_of,
    encoder_layers,
    eval_mode,
    get_module,
    head_size,
    hidden_width,
    stream_projection,
)
from compressor.arch.table import MODEL_INPUTS
from compressor.errors import DataError
from compressor.sensitivity.cost import layer_shapes

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


def make_batches(
    tokenizer: Any,
    data: Any,
    *,
    samples: int,
    seq_len: int,
    batch_size: int,
    seed: int = 0,
    num_labels: int | None = None,
    inputs: tuple[str, ...] = MODEL_INPUTS,
) -> list[Batch]:
    """Tokenised batches (with `labels`) of `samples` examples of a LabelledData drawn with `seed`.

    Args:
        inputs: the model's inputs (`parts.model_inputs`); other tokenizer outputs are dropped.
    """
    subset = data.sample(samples, seed=seed)
    texts, pairs, labels = subset.texts, subset.text_pairs, subset.labels
    regression = bool(getattr(data, "is_regression", False))
    if regression and num_labels is not None and num_labels != 1:
        raise DataError(
            f"data file `{data.path}` has regression scores but the model classifies into {num_labels} labels"
        )
    if not regression and any(y < 0 for y in labels):
        raise DataError(f"data file `{data.path}` has no labels; sensitivity scoring needs labelled examples")
    if not regression and num_labels is not None and num_labels > 1 and any(y >= num_labels for y in labels):
        raise DataError(
            f"data file `{data.path}` has label ids up to {max(labels)} but the model classifies into {num_labels}"
        )
    batches = []
    for start in range(0, len(texts), batch_size):
        stop = start + batch_size
        encoded = tokenizer(
            texts[start:stop],
            pairs[start:stop] if pairs else None,
            truncation=True,
            max_length=seq_len,
            padding=True,
            return_tensors="pt",
        )
        batch = {k: v for k, v in encoded.items() if k in inputs}
        # regression scores stay floats (a long tensor would truncate 3.8 to 3); batch_loss takes MSE of them
        batch["labels"] = torch.tensor(labels[start:stop], dtype=torch.float32 if regression else torch.long)
        batches.append(batch)
    return batches


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def batch_loss(model: nn.Module, batch: Batch, *, reduction: str = "sum") -> torch.Tensor:
    """Task loss of a batch: cross-entropy (or MSE for one-output regression), summed over examples by default."""
    device = model_device(model)
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits  # (batch, labels)
    labels = batch["labels"].to(device)
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype), reduction=reduction)
    return F.cross_entropy(logits, labels, reduction=reduction)


@dataclass
class _LayerMasks:
    heads: torch.Tensor | None = None  # (batch, heads) when set
    neurons: torch.Tensor | None = None  # (batch, neurons) when set


class UnitMasks:
    """Per-example head and neuron masks, hooked into the model while the context is open."""

    def __init__(self, model: nn.Module, *, heads: bool = True, neurons: bool = True) -> None:
        self.model = model
        self.shapes = layer_shapes(model)
        self.head_dim = head_size(model)
        self.want_heads, self.want_neurons = heads, neurons
        self.layers = [_LayerMasks() for _ in self.shapes]
        self._handles: list[Any] = []

    def __enter__(self) -> UnitMasks:
        arch = arch_of(self.model)
        for shape, block, masks in zip(self.shapes, encoder_layers(self.model), self.layers, strict=True):
            if self.want_heads and shape.heads:
                module = get_module(block, arch.attn_out)
                self._handles.append(module.register_forward_pre_hook(self._head_hook(masks, shape.heads)))
            if self.want_neurons and shape.neurons:
                module = get_module(block, arch.ffn_out)
                self._handles.append(module.register_forward_pre_hook(self._neuron_hook(masks)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for masks in self.layers:
            masks.heads = masks.neurons = None

    def _head_hook(self, masks: _LayerMasks, heads: int) -> Any:
        head_dim = self.head_dim

        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if masks.heads is None:
                return None
            context = args[0]  # (batch, seq, heads·head_dim)
            b, s, width = context.shape
            per_head = context.view(b, s, heads, head_dim)  # (batch, seq, heads, head_dim)
            masked = per_head * masks.heads[:, None, :, None].to(context.dtype)
            return (masked.view(b, s, width), *args[1:])

        return hook

    def _neuron_hook(self, masks: _LayerMasks) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if masks.neurons is None:
                return None
            activation = args[0]  # (batch, seq, neurons)
            return (activation * masks.neurons[:, None, :].to(activation.dtype), *args[1:])

        return hook

    def reset(self, batch_size: int, *, requires_grad: bool = True) -> list[torch.Tensor]:
        """Fresh all-ones masks for a batch; returns them (heads of every layer, then neurons) for autograd."""
        device = model_device(self.model)
        leaves = []
        for shape, masks in zip(self.shapes, self.layers, strict=True):
            masks.heads = masks.neurons = None
            if self.want_heads and shape.heads:
                masks.heads = torch.ones(batch_size, shape.heads, device=device, requires_grad=requires_grad)
                leaves.append(masks.heads)
            if self.want_neurons and shape.neurons:
                masks.neurons = torch.ones(batch_size, shape.neurons, device=device, requires_grad=requires_grad)
                leaves.append(masks.neurons)
        return leaves


def mask_gradient_scores(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    power: int,
    heads: bool = True,
    neurons: bool = True,
    desc: str = "scoring",
) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Σ over examples of |∂L_i/∂ξ|^power for every head and neuron mask; also the mean loss.

    Returns (head scores per layer, neuron scores per layer, mean loss per example); a layer without heads (or
    FFN) gets an empty tensor.
    """
    from tqdm.auto import tqdm

    shapes = layer_shapes(model)
    head_acc = [torch.zeros(s.heads, dtype=torch.float64) for s in shapes]
    neuron_acc = [torch.zeros(s.neurons, dtype=torch.float64) for s in shapes]
    total_loss, examples = 0.0, 0
    batches = list(batches)
    with eval_mode(model), UnitMasks(model, heads=heads, neurons=neurons) as masks:
        for batch in tqdm(batches, desc=desc, disable=not logger.isEnabledFor(logging.INFO)):
            n = int(batch["labels"].shape[0])
            leaves = masks.reset(n)
            if not leaves:
                break
            loss = batch_loss(model, batch)  # summed, so each example's mask gets its own ∂L_i/∂ξ_i
            grads = iter(torch.autograd.grad(loss, leaves))
            for shape, h_acc, n_acc in zip(shapes, head_acc, neuron_acc, strict=True):
                if heads and shape.heads:
                    h_acc += next(grads).detach().abs().pow(power).sum(0).double().cpu()
                if neurons and shape.neurons:
                    n_acc += next(grads).detach().abs().pow(power).sum(0).double().cpu()
            total_loss += float(loss.detach())
            examples += n
    return head_acc, neuron_acc, total_loss / max(examples, 1)


class HiddenMask:
    """A per-example mask over the residual stream's dimensions, applied to the output of every LayerNorm that
    writes the stream (the embeddings' and each layer's two): CoFi's hidden-dimension mask (Xia et al. 2022)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.mask: torch.Tensor | None = None  # (batch, width)
        self._handles: list[Any] = []

    def __enter__(self) -> HiddenMask:
        arch = arch_of(self.model)
        # the stream starts at the embeddings' projection when there is one (ELECTRA), else at their LayerNorm
        first = stream_projection(self.model)
        if first is None and arch.embeddings_norm:
            first = get_module(self.model, arch.embeddings_norm)
        norms = [first] if first is not None else []
        norms += [m for block in encoder_layers(self.model) for m in block.modules() if isinstance(m, nn.LayerNorm)]
        for norm in norms:
            self._handles.append(norm.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.mask = None

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        if self.mask is None:
            return None
        return output * self.mask[:, None, :].to(output.dtype)  # (batch, seq, width)

    def reset(self, batch_size: int, width: int) -> torch.Tensor:
        self.mask = torch.ones(batch_size, width, device=model_device(self.model), requires_grad=True)
        return self.mask


def hidden_importance(model: nn.Module, batches: Iterable[Batch]) -> torch.Tensor:
    """Per dimension of the residual stream, the diagonal empirical Fisher of its mask, Σ_examples (∂L_i/∂z_d)²."""
    from tqdm.auto import tqdm

    width = hidden_width(model)
    acc = torch.zeros(width, dtype=torch.float64)
    with eval_mode(model), HiddenMask(model) as hidden:
        for batch in tqdm(
            list(batches), desc="scoring hidden dimensions", disable=not logger.isEnabledFor(logging.INFO)
        ):
            mask = hidden.reset(int(batch["labels"].shape[0]), width)
            (grad,) = torch.autograd.grad(batch_loss(model, batch), [mask])
            acc += grad.detach().pow(2).sum(0).double().cpu()
    return acc


def hidden_magnitude(model: nn.Module) -> torch.Tensor:
    """Data-free importance of each stream dimension: mean |w| of every weight that reads or writes it."""
    arch = arch_of(model)
    total = torch.zeros(hidden_width(model), dtype=torch.float64)
    count = 0
    projection = stream_projection(model)
    if projection is not None:
        weight = projection.weight.detach().abs().double()  # (width, embedding size)
        total += weight.sum(1).cpu()
        count += weight.shape[1]
    for path in [] if projection is not None else arch.stream_embeddings():
        weight = get_module(model, path).weight.detach().abs().double()  # (rows, width)
        total += weight.sum(0).cpu()
        count += weight.shape[0]
    for block in encoder_layers(model):
        for role, dim in (("query", 0), ("key", 0), ("value", 0), ("ffn_in", 0), ("attn_out", 1), ("ffn_out", 1)):
            try:
                module = get_module(block, getattr(arch, role))
            except AttributeError:
                continue
            if isinstance(module, nn.Linear) and module.weight.numel():
                weight = module.weight.detach().abs().double()
                total += weight.sum(dim).cpu()
                count += weight.shape[dim]
    return total / max(count, 1)
