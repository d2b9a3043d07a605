"""Find the parts of a loaded classifier through the architecture table, by role (`query`, `ffn_in` …)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

from compressor.arch.table import ARCHS, ArchSpec
from compressor.errors import ModelError

M = TypeVar("M", bound=nn.Module)


def arch_of(model: nn.Module) -> ArchSpec:
    """The ArchSpec for a loaded model, from its `config.model_type`."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHS:
        raise ModelError(f"model type `{model_type}` is not supported; supported: {', '.join(ARCHS.names())}")
    return ARCHS.get(model_type)


def get_module(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    return get_module(model, arch_of(model).layers)  # type: ignore[return-value]


def head_size(model: nn.Module) -> int:
    """Width of one attention head (the source model's: width pruning leaves `config.hidden_size` as it was)."""
    return model.config.hidden_size // model.config.num_attention_heads


def hidden_width(model: nn.Module) -> int:
    """The current width of the residual stream (smaller than `config.hidden_size` after width pruning)."""
    return int(get_module(model, arch_of(model).word_embeddings).weight.shape[1])


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


def to_device(model: nn.Module, device: str | torch.device | None) -> nn.Module:
    return model if device is None else model.to(device)
