"""The PaFi wrapping layer: a frozen linear plus a trainable sparse delta at fixed entries."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class PafiLinear(nn.Module):
    """`base_layer` with W' = W + Δ, Δ zero except at `pafi_indices` (flat positions in W) where it is `pafi_values`.

    Only the values train, so the optimizer state is k numbers per matrix rather than a dense copy of W.
    """

    def __init__(self, base_layer: nn.Linear, indices: torch.Tensor) -> None:
        super().__init__()
        self.base_layer = base_layer
        # int32 is enough for any single matrix (< 2**31 entries) and halves the stored index size
        self.register_buffer("pafi_indices", indices.to(device=base_layer.weight.device, dtype=torch.int32))
        self.pafi_values = nn.Parameter(
            torch.zeros(indices.numel(), dtype=base_layer.weight.dtype, device=base_layer.weight.device)
        )

    def adapter_params(self) -> list[nn.Parameter]:
        return [self.pafi_values]

    def delta_weight(self) -> torch.Tensor:
        weight = self.base_layer.weight
        flat = torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
        return flat.index_add(0, self.pafi_indices, self.pafi_values).view_as(weight)  # (out, in)

    def effective_weight(self) -> torch.Tensor:
        weight = self.base_layer.weight
        return weight.reshape(-1).index_add(0, self.pafi_indices, self.pafi_values).view_as(weight)  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.base_layer.bias)

    @torch.no_grad()
    def merge_(self) -> nn.Linear:
        """Write the values into the base weight and return the plain linear."""
        weight = self.base_layer.weight
        weight.view(-1).index_add_(0, self.pafi_indices, self.pafi_values.to(weight.dtype))
        return self.base_layer
