"""What every fine-tuning method provides, the `METHODS` registry, and the pieces methods share.

A method injects its modules into a loaded classifier, marks what trains, and later merges back into stock
modules. Methods with hand-written adapter layers (DSEE, PaFi, HiWi, AdaMix) share `wrap_` (the guard against a
second injection, freezing, the replacement loop, the trainable classifier) and `unwrap` (the merge loop: every
layer folds itself with `merge_()`), so a method folder holds only what is specific to it. peft-based methods
(LoRA, Pruning-Adapter) merge through peft. Adapter parameters and buffers carry the method's prefix (`dsee_`,
`pafi_`, `lora_` …), so what a run saves is a name filter: the trainable parameters plus the prefixed buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from compressor.arch.parts import arch_of, get_module, set_module
from compressor.errors import MergeError, ModelError
from compressor.registry import Registry

M = TypeVar("M", bound=nn.Module)


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
        config_cls: its dataclass config (kind = the method's name, version, validated fields with help).
        inject: `(model, cfg) -> model`: add adapters and set `requires_grad`; may return a wrapper (peft).
        prefix: name fragment of the method's parameters and buffers (what `adapter_state` saves).
        layers: the method's hand-written adapter layer classes; merging unwraps them (`unwrap`).
        merge: `(model) -> model` for a method without hand-written layers (peft's merge, or nothing to do).
        prepare: optional `(model, cfg, data, tokenizer) -> None`, a data-dependent structural step before
            `inject` (Pruning-Adapter removes heads here); its resulting structure is saved with the adapter.
        loss: optional `(model, inputs, outputs) -> Tensor` added to the task loss during training.
        default_lr: learning rate when the user gives none.
        find_unused_parameters: DDP must look for unused parameters (e.g. random expert routing).
        stored: optional `(model) -> dict` of honest storage figures for the trained adapter (bytes, fractions),
            added to the run's metrics.
        delta: optional `(trained model) -> {stock name: tensor}`: what the run stores *instead of* its adapter,
            the base tensors the method changed, already merged (HiWi keeps only P' and the head, as its paper
            does). Base + delta is the merged model; the adapter itself is not kept.
    """

    config_cls: type
    inject: Callable[[nn.Module, Any], nn.Module]
    prefix: str
    layers: tuple[type[nn.Module], ...] = ()
    merge: Callable[[nn.Module], nn.Module] | None = None
    prepare: Callable[[nn.Module, Any, Any, Any], None] | None = None
    loss: Callable[[nn.Module, dict[str, torch.Tensor], Any], torch.Tensor] | None = None
    default_lr: float = 5e-5
    find_unused_parameters: bool = False
    stored: Callable[[nn.Module], dict[str, float]] | None = None
    delta: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None

    @property
    def name(self) -> str:
        return self.config_cls.kind

    def merge_(self, model: nn.Module) -> nn.Module:
        """Fold this method's adapters in `model` into its weights (a model without them is returned as it is)."""
        if self.merge is not None:
            return self.merge(model)
        return unwrap(model, self.layers)


METHODS: Registry[Method] = Registry("method")


def wrap_(
    model: nn.Module,
    found: Iterable[tuple[str, M]],
    make: Callable[[str, M], nn.Module],
    *,
    layers: tuple[type[nn.Module], ...],
    what: str,
) -> int:
    """Freeze `model`, replace each found `(name, module)` by `make(name, module)`, let the classifier train.

    Refuses a model that already holds one of `layers` (a second injection would stack adapters) and an empty
    `found` (the targets do not exist in this model, e.g. every head was pruned). Returns how many were wrapped.
    """
    refuse_reinjection(model, layers, what)
    found = list(found)
    if not found:
        raise ModelError(f"{what} found nothing to adapt in this model (are the targets pruned away?)")
    freeze_(model)
    for name, module in found:
        set_module(model, name, make(name, module))
    unfreeze_classifier_(model)
    return len(found)


def refuse_reinjection(model: nn.Module, layers: tuple[type[nn.Module], ...], what: str) -> None:
    """A ModelError when `model` already holds one of the method's layers: a second injection would stack them."""
    if any(isinstance(m, layers) for m in model.modules()):
        raise ModelError(f"{what} is already injected into this model")


def unwrap(model: nn.Module, layers: tuple[type[nn.Module], ...]) -> nn.Module:
    """Replace every adapter layer of the given classes by the stock module its `merge_()` returns."""
    if not layers:
        return model
    for name, module in list(model.named_modules()):
        if isinstance(module, layers):
            set_module(model, name, module.merge_())
    return model


def freeze_(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze_classifier_(model: nn.Module) -> None:
    """The task head trains in every method (DistilBERT's pre_classifier with its classifier: both start new)."""
    for path in arch_of(model).head_modules():
        for p in get_module(model, path).parameters():
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
    """Names of modules that are neither torch.nn, transformers nor compressor's own stock modules (the modules of a
    pruned structure, and the merged FFN adapter that `load_model` rebuilds)."""
    bad = []
    own = ("compressor.arch.modules", "compressor.arch.adapters")
    for name, module in model.named_modules():
        mod = type(module).__module__
        if not (mod.startswith("torch.nn") or mod.startswith("transformers.") or mod in own):
            bad.append(f"{name}: {type(module).__name__}")
    return bad
