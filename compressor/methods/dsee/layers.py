"""The DSEE wrapping layer: frozen W0 plus s·(B·A + S⊙M), the sparse part stored as N values at fixed entries."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class DseeLinear(nn.Module):
    """`base_layer` (frozen) with W = W0 + s·(B·A + S⊙M).

    `dsee_S` holds only the N values on the support M; `dsee_index` holds their flat positions in W (row·in + col).
    Storing the values as a vector keeps the trainable count honest (N, not out·in) and the optimizer state small;
    the index is a buffer so a saved adapter restores exactly the support it was trained on.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        rank: int,
        scale: float,
        index: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        weight = base_layer.weight
        self.base_layer = base_layer
        self.scale = scale
        a = torch.randn(rank, base_layer.in_features, generator=generator) * 0.02  # DSEE: A ~ N(0, 0.02²)
        self.dsee_A = nn.Parameter(a.to(weight.device, weight.dtype))  # (r, in)
        self.dsee_B = nn.Parameter(
            torch.zeros(base_layer.out_features, rank, device=weight.device, dtype=weight.dtype)
        )  # (out, r); B = 0 so ΔW = 0 at start
        self.dsee_S = nn.Parameter(torch.zeros(index.numel(), device=weight.device, dtype=weight.dtype))  # (N,)
        self.register_buffer("dsee_index", index.to(device=weight.device, dtype=torch.long))  # (N,)

    def adapter_params(self) -> list[nn.Parameter]:
        return [self.dsee_A, self.dsee_B, self.dsee_S]

    def sparse_dense(self) -> torch.Tensor:
        """S⊙M as a dense (out, in) matrix."""
        weight = self.base_layer.weight
        flat = torch.zeros(weight.numel(), device=weight.device, dtype=self.dsee_S.dtype)
        return flat.index_add(0, self.dsee_index, self.dsee_S).view_as(weight)  # (out, in)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s·(B·A + S⊙M), (out, in)."""
        return self.scale * (self.dsee_B @ self.dsee_A + self.sparse_dense())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_rank = F.linear(F.linear(x, self.dsee_A), self.dsee_B)  # (..., out)
        # S⊙M·x touches only the N support entries: out[row] += S·x[col]
        rows = torch.div(self.dsee_index, self.base_layer.in_features, rounding_mode="floor")  # (N,)
        cols = self.dsee_index % self.base_layer.in_features  # (N,)
        contrib = x[..., cols] * self.dsee_S  # (..., N); its dtype follows type promotion under autocast
        sparse = contrib.new_zeros(*x.shape[:-1], self.base_layer.out_features)  # (..., out)
        sparse = sparse.index_add(-1, rows, contrib)
        return self.base_layer(x) + self.scale * (low_rank + sparse)

    @torch.no_grad()
    def merge_(self) -> nn.Linear:
        """W ← W0 + ΔW in the base linear, which is returned (a stock module)."""
        weight = self.base_layer.weight
        weight.add_(self.delta_weight().to(weight.dtype))
        return self.base_layer
