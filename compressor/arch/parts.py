"""Find the parts of a loaded classifier through the architecture table, by role (`query`, `ffn_in` …)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

from compressor.arch.modules import (
    BiasOnly,
    CodedLookup,
    EmptyIntermediate,
    HeadlessAttention,
    HeadlessSelfAttention,
    RemappedEmbedding,
)
from compressor.arch.table import ArchSpec, arch_for

M = TypeVar("M", bound=nn.Module)


def arch_of(model: nn.Module) -> ArchSpec:
    """The ArchSpec for a loaded model, from its `config.model_type`."""
    return arch_for(getattr(getattr(model, "config", None), "model_type", None))


def get_module(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    return get_module(model, arch_of(model).layers)  # type: ignore[return-value]


def head_size(model: nn.Module) -> int:
    """Width of one attention head (the source model's: width pruning leaves the config's hidden size as it was)."""
    arch = arch_of(model)
    return arch.hidden_size(model.config) // arch.num_heads(model.config)


def stream_projection(model: nn.Module) -> nn.Module | None:
    """The Linear that projects the embeddings into the residual stream, when the model has one (ELECTRA with
    embedding_size ≠ hidden_size); then the embedding tables are not in the stream, the projection's outputs are."""
    arch = arch_of(model)
    if not arch.embeddings_project:
        return None
    try:
        return get_module(model, arch.embeddings_project)
    except AttributeError:
        return None


def hidden_width(model: nn.Module) -> int:
    """The current width of the residual stream (smaller than the config's hidden size after width pruning)."""
    projection = stream_projection(model)
    if projection is not None:
        return int(projection.weight.shape[0])
    return int(get_module(model, arch_of(model).word_embeddings).weight.shape[1])


def model_inputs(model: nn.Module) -> tuple[str, ...]:
    """The inputs the model reads (no token_type_ids for DistilBERT, nor for a one-type RoBERTa): what batches keep."""
    return arch_of(model).model_inputs(model.config)


def max_tokens(model: nn.Module) -> int | None:
    """The longest sequence the model's position table takes (RoBERTa: 2 fewer than max_position_embeddings)."""
    return arch_of(model).max_tokens(model.config)


def has_heads(block: nn.Module, arch: ArchSpec) -> bool:
    """False for a layer whose heads were all removed (its attention replaced by a headless module)."""
    return not isinstance(get_module(block, arch.attention), (HeadlessAttention, HeadlessSelfAttention))


def has_ffn(block: nn.Module, arch: ArchSpec) -> bool:
    """False for a layer whose FFN neurons were all removed."""
    return not isinstance(get_module(block, arch.ffn_in.rpartition(".")[0]), (EmptyIntermediate, BiasOnly))


def attention_heads(block: nn.Module, arch: ArchSpec) -> int:
    """The head count a layer's attention computes with (0 for a headless layer)."""
    if not has_heads(block, arch):
        return 0
    return int(getattr(get_module(block, arch.self_attention), arch.heads_attr))


def encoder_linears(model: nn.Module, roles: list[str] | tuple[str, ...]) -> list[tuple[str, nn.Linear]]:
    """`(full name, module)` of each `nn.Linear` playing one of `roles` in an encoder layer, in layer order.

    Parts a pruned layer no longer has (a layer without heads has no `attention.self`; one without FFN neurons
    has `EmptyIntermediate`/`BiasOnly` instead of linears) are skipped rather than reported as errors.
    """
    return encoder_modules(model, roles, nn.Linear)


def encoder_modules(model: nn.Module, roles: list[str] | tuple[str, ...], kind: type[M]) -> list[tuple[str, M]]:
    """`(full name, module)` of each module of exactly type `kind` (and not empty) playing one of `roles`."""
    arch = arch_of(model)
    found = []
    for i, layer in enumerate(encoder_layers(model)):
        for role in roles:
            path = getattr(arch, role)
            try:
                module = layer.get_submodule(path)
            except AttributeError:
                continue
            weight = getattr(module, "weight", None)
            if type(module) is kind and (weight is None or weight.numel() > 0):
                found.append((f"{arch.layers}.{i}.{path}", module))
    return found


@torch.no_grad()
def zero_smallest_(weight: torch.Tensor, score: torch.Tensor, share: float) -> torch.Tensor:
    """Set the round(share · numel) entries of `weight` with the smallest `score` to zero, in place (ties broken by
    `topk`, deterministically); returns the keep-mask (True = kept), shaped like `weight`."""
    keep = torch.ones_like(weight, dtype=torch.bool)
    k = round(share * weight.numel())
    if k:
        keep.view(-1)[torch.topk(score.float().reshape(-1), k, largest=False).indices] = False
    weight.mul_(keep)
    return keep


def count_parameters(model: nn.Module, *, encoder_only: bool = False) -> int:
    if encoder_only:
        return sum(p.numel() for p in encoder_layers(model).parameters())
    return sum(p.numel() for p in model.parameters())


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off inside the block; the model's previous train/eval mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def export_forms(model: nn.Module) -> Iterator[nn.Module]:
    """`model` with each coded vocabulary (RemappedEmbedding with codes) in its export form (CodedLookup: the
    same outputs, a lookup that mixes only the ids that need it) inside the block; the modules come back after."""
    swapped = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, RemappedEmbedding) and module.codes
    ]
    for name, module in swapped:
        set_module(model, name, CodedLookup(module))
    try:
        yield model
    finally:
        for name, module in swapped:
            set_module(model, name, module)


def to_device(model: nn.Module, device: str | torch.device | None) -> nn.Module:
    return model if device is None else model.to(device)
