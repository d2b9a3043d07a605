"""Find the projections a method adapts, by role (`query`, `ffn_in` …), through the architecture table."""

from __future__ import annotations

from typing import TypeVar

from torch import nn

from compressor.models import arch_of, encoder_layers

M = TypeVar("M", bound=nn.Module)

LINEAR_ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


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
