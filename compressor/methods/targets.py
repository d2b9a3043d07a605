"""Find the projections a method adapts, by role (`query`, `ffn_in` …), through the architecture table."""

from __future__ import annotations

from torch import nn

from compressor.models import arch_of, encoder_layers

LINEAR_ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


def encoder_linears(model: nn.Module, roles: list[str] | tuple[str, ...]) -> list[tuple[str, nn.Linear]]:
    """`(full name, module)` of each `nn.Linear` playing one of `roles` in an encoder layer, in layer order.

    Parts a pruned layer no longer has (a layer without heads has no `attention.self`; one without FFN neurons
    has `EmptyIntermediate`/`BiasOnly` instead of linears) are skipped rather than reported as errors.
    """
    arch = arch_of(model)
    found = []
    for i, layer in enumerate(encoder_layers(model)):
        for role in roles:
            path = getattr(arch, role)
            try:
                module = layer.get_submodule(path)
            except AttributeError:
                continue
            if type(module) is nn.Linear and module.weight.numel() > 0:
                found.append((f"{arch.layers}.{i}.{path}", module))
    return found
