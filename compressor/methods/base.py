"""What every fine-tuning method provides, and the `METHODS` registry.

A method injects its modules into a loaded classifier, marks what trains, and later merges back into stock
modules. Adapter parameters and buffers carry the method's prefix (`dsee_`, `pafi_`, `lora_` …), so choosing what
is saved is a name filter: the trainable parameters plus the prefixed buffers (e.g. a sparse support).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from compressor.arch.parts import arch_of, get_module
from compressor.registry import Registry


class AdapterLayer(Protocol):
    """What a hand-written adapter layer (wrapping `base_layer`) offers."""

    base_layer: nn.Module

    def adapter_params(self) -> list[nn.Parameter]: ...

    def delta_weight(self) -> torch.Tensor: ...

    def merge_(self) -> nn.Module: ...


@dataclass(frozen=True)
class Method:
    """One fine-tuning method.

    Attributes:
        config_cls: its dataclass config (kind, version, validated fields with help).
        inject: `(model, cfg) -> model`: add adapters and set `requires_grad`; may return a wrapper (peft).
        merge: `(model) -> model`: fold adapters into the weights; the result has stock modules only.
        prefix: name fragment of the method's parameters and buffers (what `adapter_state` saves).
        prepare: optional `(model, cfg, data, tokenizer) -> None`, a data-dependent structural step before
            `inject` (Pruning-Adapter removes heads here); its resulting structure is saved with the adapter.
        loss: optional `(model, inputs, outputs) -> Tensor` added to the task loss during training.
        default_lr: learning rate when the user gives none.
        find_unused_parameters: DDP must look for unused parameters (e.g. random expert routing).
        stored: optional `(model) -> dict` of honest storage figures for the trained adapter (bytes, fractions),
            added to the run's metrics.
    """

    config_cls: type
    inject: Callable[[nn.Module, Any], nn.Module]
    merge: Callable[[nn.Module], nn.Module]
    prefix: str
    prepare: Callable[[nn.Module, Any, Any, Any], None] | None = None
    loss: Callable[[nn.Module, dict[str, torch.Tensor], Any], torch.Tensor] | None = None
    default_lr: float = 5e-5
    find_unused_parameters: bool = False
    stored: Callable[[nn.Module], dict[str, float]] | None = None


METHODS: Registry[Method] = Registry("method")


def freeze_(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze_classifier_(model: nn.Module) -> None:
    for p in get_module(model, arch_of(model).classifier).parameters():
        p.requires_grad_(True)


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in trainable_parameters(model).values())


def adapter_state(model: nn.Module, method: Method) -> dict[str, torch.Tensor]:
    """What a fine-tuning run stores: every trainable parameter plus the method's prefixed buffers."""
    state = {n: p.detach().cpu().contiguous() for n, p in trainable_parameters(model).items()}
    for name, buf in model.named_buffers():
        if method.prefix and method.prefix in name.rpartition(".")[2]:
            state[name] = buf.detach().cpu().contiguous()
    return state


def load_adapter_state_(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a saved adapter state into an injected model; every saved key must exist with its shape."""
    from compressor.errors import MergeError

    own = dict(model.named_parameters()) | dict(model.named_buffers())
    missing = [k for k in state if k not in own]
    if missing:
        raise MergeError(f"adapter does not fit the model: {len(missing)} unknown tensors, e.g. `{missing[0]}`")
    with torch.no_grad():
        for k, v in state.items():
            if own[k].shape != v.shape:
                raise MergeError(f"adapter tensor `{k}` has shape {tuple(v.shape)}, model has {tuple(own[k].shape)}")
            own[k].copy_(v.to(own[k].device, own[k].dtype))


def only_stock_modules(model: nn.Module) -> list[str]:
    """Names of modules that are neither torch.nn, transformers nor compressor's pruned-structure modules."""
    bad = []
    for name, module in model.named_modules():
        mod = type(module).__module__
        if not (mod.startswith("torch.nn") or mod.startswith("transformers.") or mod == "compressor.arch.modules"):
            bad.append(f"{name}: {type(module).__name__}")
    return bad
