"""The AdaMix wrapping layer: a frozen linear plus a mixture of low-rank experts with a shared up-projection."""

from __future__ import annotations

import math

import torch
from torch import nn


class AdamixLinear(nn.Module):
    """y = W·x + (α/r)·B·A·x, with A = A_i for one random expert i per training forward, A* = mean_i A_i in eval.

    Because B is shared, mean_i (B·A_i) = B·mean_i(A_i): evaluating with A* is exactly the average of the
    experts' updates, and it folds into W like LoRA.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        *,
        experts: int,
        rank: int,
        alpha: float,
        dropout: float,
        init_generator: torch.Generator,
        router: torch.Generator,
        consistency: float = 0.0,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        weight = base_layer.weight
        out_features, in_features = weight.shape
        down = torch.empty(experts, rank, in_features)  # (M, r, in)
        for i in range(experts):  # each expert gets its own draw, else they would stay identical
            nn.init.kaiming_uniform_(down[i], a=math.sqrt(5), generator=init_generator)
        self.adamix_A = nn.Parameter(down.to(device=weight.device, dtype=weight.dtype))
        self.adamix_B = nn.Parameter(torch.zeros(out_features, rank, device=weight.device, dtype=weight.dtype))
        self.adamix_dropout = nn.Dropout(dropout)
        self.scaling = alpha / rank
        self.router = router  # shared by every AdamixLinear of the model: one seeded stream of draws
        self.last_expert: int | None = None
        self.consistency = consistency  # weight of the consistency loss (read by adamix.method.consistency_loss)

    def adapter_params(self) -> list[nn.Parameter]:
        return [self.adamix_A, self.adamix_B]

    def expert_delta(self, i: int) -> torch.Tensor:
        return self.scaling * self.adamix_B @ self.adamix_A[i]  # (out, r) @ (r, in) → (out, in)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * self.adamix_B @ self.adamix_A.mean(dim=0)  # (out, in)

    def down_projection(self) -> torch.Tensor:
        """A_i of a uniformly drawn expert while training; the average A* otherwise."""
        if not self.training:
            self.last_expert = None
            return self.adamix_A.mean(dim=0)  # (r, in)
        self.last_expert = int(torch.randint(self.adamix_A.shape[0], (1,), generator=self.router))
        return self.adamix_A[self.last_expert]  # (r, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.down_projection()
        update = self.adamix_dropout(x) @ a.t() @ self.adamix_B.t()  # (..., in) → (..., r) → (..., out)
        return self.base_layer(x) + self.scaling * update

    @torch.no_grad()
    def merge_(self) -> nn.Linear:
        """Fold (α/r)·B·A* into W and return the plain linear."""
        self.base_layer.weight.add_(self.delta_weight().to(self.base_layer.weight.dtype))
        return self.base_layer
