"""HiWi layers: the bottleneck adapter g and the FFN linear whose parameters it rewrites, P' = P + g(P)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils import skip_init

ACTIVATION_MODULES = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class HiwiAdapter(nn.Module):
    """g(P) = up(act(down(P))) on each row of P; `up` starts at zero, so g = 0 and P' = P at step 0."""

    def __init__(
        self,
        width: int,
        bottleneck: int,
        activation: str,
        *,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        # skip_init: no draw from the global RNG; the seeded generator below makes inject reproducible
        self.down = skip_init(nn.Linear, width, bottleneck, device=device, dtype=dtype)
        self.act = ACTIVATION_MODULES[activation]()
        self.up = skip_init(nn.Linear, bottleneck, width, device=device, dtype=dtype)
        with torch.no_grad():
            bound = 1 / math.sqrt(width)  # nn.Linear's default range, drawn from our generator
            self.down.weight.copy_(
                torch.empty_like(self.down.weight, device="cpu").uniform_(-bound, bound, generator=generator)
            )
            self.down.bias.copy_(
                torch.empty_like(self.down.bias, device="cpu").uniform_(-bound, bound, generator=generator)
            )
            self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(rows)))  # (n_rows, width) → (n_rows, width)


def adapted(param: torch.Tensor, adapter: HiwiAdapter | None) -> torch.Tensor:
    """P + g(P): a vector (bias, LayerNorm gain) is one input row of g; a matrix feeds each of its rows."""
    if adapter is None:
        return param
    if param.dim() == 1:
        return param + adapter(param.unsqueeze(0)).squeeze(0)  # (width,) → (1, width) → (width,)
    return param + adapter(param)  # (rows, width)


class HiwiParams(nn.Module):
    """`base_layer` whose weight and/or bias go through their adapter before use; subclasses say how they are used."""

    def __init__(self, base_layer: nn.Module, hiwi_weight: HiwiAdapter | None, hiwi_bias: HiwiAdapter | None) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.hiwi_weight = hiwi_weight
        self.hiwi_bias = hiwi_bias

    def adapter_params(self) -> list[nn.Parameter]:
        return [p for a in (self.hiwi_weight, self.hiwi_bias) if a is not None for p in a.parameters()]

    def new_weight(self) -> torch.Tensor:
        return adapted(self.base_layer.weight, self.hiwi_weight)

    def new_bias(self) -> torch.Tensor | None:
        bias = self.base_layer.bias
        return None if bias is None else adapted(bias, self.hiwi_bias)

    def delta_weight(self) -> torch.Tensor:
        return self.new_weight() - self.base_layer.weight

    @torch.no_grad()
    def merge_(self) -> nn.Module:
        """Compute P' once, write it over P, and return the plain module (the adapters are dropped)."""
        weight, bias = self.new_weight(), self.new_bias()
        self.base_layer.weight.copy_(weight)
        if bias is not None:
            self.base_layer.bias.copy_(bias)
        return self.base_layer


class HiwiLinear(HiwiParams):
    """An FFN linear with adapted parameters: F.linear(x, W', b')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.new_weight(), self.new_bias())


class HiwiLayerNorm(HiwiParams):
    """The LayerNorm closing the FFN sub-layer (LN(x + FFN(x))) with adapted gain and/or bias."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ln = self.base_layer
        return F.layer_norm(x, ln.normalized_shape, self.new_weight(), self.new_bias(), ln.eps)


# the stock module kinds HiWi can adapt → their wrapper
WRAPPERS: dict[type[nn.Module], type[HiwiParams]] = {nn.Linear: HiwiLinear, nn.LayerNorm: HiwiLayerNorm}
