"""HiWi: inject adapters over FFN parameters, merge P' = P + g(P) into them, and measure the stored delta."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from compressor.arch.parts import encoder_modules
from compressor.errors import ModelError
from compressor.methods.base import wrap_
from compressor.methods.hiwi.config import TARGETS, HiwiConfig
from compressor.methods.hiwi.layers import WRAPPERS, HiwiAdapter, HiwiParams

logger = logging.getLogger(__name__)


def inject_hiwi(model: nn.Module, cfg: HiwiConfig) -> nn.Module:
    """Freeze the model and give every targeted FFN tensor its own adapter; the adapters and the head train."""
    generator = torch.Generator().manual_seed(cfg.seed)
    wanted: dict[str, list[str]] = {}  # role → ["weight", "bias"] in config order
    for target in cfg.targets:
        role, tensor = TARGETS[target]
        wanted.setdefault(role, []).append(tensor)
    found = [  # each role's module is of one kind; that kind picks the wrapper
        (name, (module, tensors, wrapper))
        for role, tensors in wanted.items()
        for kind, wrapper in WRAPPERS.items()
        for name, module in encoder_modules(model, [role], kind)
    ]

    def make(name: str, found: tuple[nn.Module, list[str], type[HiwiParams]]) -> HiwiParams:
        module, tensors, wrapper = found
        adapters = {}
        for tensor in tensors:
            param = getattr(module, tensor)
            if param is None:
                raise ModelError(f"HiWi targets the {tensor} of `{name}`, which has none")
            adapters[tensor] = HiwiAdapter(  # a matrix (out, in) feeds rows of width `in`; a vector is one row
                param.shape[-1],
                cfg.bottleneck,
                cfg.activation,
                generator=generator,
                device=param.device,
                dtype=param.dtype,
            )
        return wrapper(module, adapters.get("weight"), adapters.get("bias"))

    count = wrap_(model, found, make, layers=(HiwiParams,), what="HiWi")
    logger.info("HiWi: adapters on %s of %d FFN modules", "+".join(cfg.targets), count)
    return model


@torch.no_grad()
def delta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a merged HiWi model changes, under their stock names: every P' plus the trained head.

    This, not the adapters, is what a HiWi run needs to ship: base model + these tensors = the merged model.
    """
    state: dict[str, torch.Tensor] = {}
    adapter_ids = set()
    for name, module in model.named_modules():
        if isinstance(module, HiwiParams):
            adapter_ids.update(id(p) for p in module.adapter_params())
            if module.hiwi_weight is not None:
                state[f"{name}.weight"] = module.new_weight().detach().cpu().contiguous()
            if module.hiwi_bias is not None:
                state[f"{name}.bias"] = module.new_bias().detach().cpu().contiguous()
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in adapter_ids:
            state[name] = param.detach().cpu().contiguous()
    return state


@dataclass(frozen=True)
class StoredDelta:
    """Size of HiWi's stored delta (changed tensors only) against the model it applies to."""

    params: int
    model_params: int

    @property
    def fraction(self) -> float:
        return self.params / max(self.model_params, 1)

    def metrics(self) -> dict[str, float]:
        """What `finetune` records in metrics.json."""
        return {"stored_delta_params": self.params, "stored_delta_fraction": self.fraction}


def stored_delta(model: nn.Module) -> StoredDelta:
    """Parameters of `delta_state` vs the model's own parameters (adapters excluded), for an injected model."""
    adapter_ids = {id(p) for m in model.modules() if isinstance(m, HiwiParams) for p in m.adapter_params()}
    own = sum(p.numel() for p in model.parameters() if id(p) not in adapter_ids)
    return StoredDelta(sum(t.numel() for t in delta_state(model).values()), own)
