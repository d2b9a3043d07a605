"""The AdaMix layers: a frozen linear plus a mixture of low-rank experts (lora form), or a mixture of bottleneck
adapters on the FFN output (adapter form), each with a shared up-projection."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from compressor.arch.adapters import FfnAdapter, make_activation


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


class AdamixAdapter(nn.Module):
    """M bottleneck adapters on the FFN output sharing one up-projection, in the slot of the dropout that follows
    the FFN output projection (`base_layer`, which still runs last):

        y = dropout(x + U·act(D·x + d) + u),  (D, d) = (D_i, d_i) of one random expert i per training forward,
                                              (D*, d*) = the experts' average in eval.

    The paper's released BERT script shares the up-projection (`sharing_up 1`, `sharing_down 0`); so do we. Every
    expert starts from the same draw of D (its code deep-copies one expert) and U = 0 (the adapter starts as the
    identity): the experts then differ only by the batches routed to them, which keeps them close enough for the
    weight average (AdaMix's merging) to act like their ensemble. Unlike the lora form the average is not the mean
    of the experts' outputs (act is non-linear); the model evaluates and merges with the averaged weights alike.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        *,
        width: int,
        experts: int,
        bottleneck: int,
        activation: str,
        init_generator: torch.Generator,
        router: torch.Generator,
        consistency: float = 0.0,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        down = torch.empty(bottleneck, width)  # (r, width), nn.Linear's default initialisation from our generator
        nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=init_generator)
        bound = 1 / math.sqrt(width)
        down_bias = torch.empty(bottleneck).uniform_(-bound, bound, generator=init_generator)
        factory = {"device": device, "dtype": dtype}
        self.adamix_down = nn.Parameter(down.expand(experts, -1, -1).clone().to(**factory))  # (M, r, width)
        self.adamix_down_bias = nn.Parameter(down_bias.expand(experts, -1).clone().to(**factory))  # (M, r)
        self.adamix_up = nn.Parameter(torch.zeros(width, bottleneck, **factory))  # (width, r), shared
        self.adamix_up_bias = nn.Parameter(torch.zeros(width, **factory))
        self.activation = activation
        self.act = make_activation(activation)
        self.router = router  # shared by every mixture of the model: one seeded stream of draws
        self.last_expert: int | None = None
        self.consistency = consistency  # weight of the consistency loss (read by adamix.method.consistency_loss)

    def adapter_params(self) -> list[nn.Parameter]:
        return [self.adamix_down, self.adamix_down_bias, self.adamix_up, self.adamix_up_bias]

    def down_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(D_i, d_i) of a uniformly drawn expert while training; the average (D*, d*) otherwise."""
        if not self.training:
            self.last_expert = None
            return self.adamix_down.mean(dim=0), self.adamix_down_bias.mean(dim=0)  # (r, width), (r,)
        self.last_expert = int(torch.randint(self.adamix_down.shape[0], (1,), generator=self.router))
        return self.adamix_down[self.last_expert], self.adamix_down_bias[self.last_expert]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.down_projection()
        h = self.act(F.linear(x, weight, bias))  # (..., width) → (..., r)
        return self.base_layer(x + F.linear(h, self.adamix_up, self.adamix_up_bias))  # (..., width)

    @torch.no_grad()
    def merge_(self) -> FfnAdapter:
        """The experts averaged into one plain adapter (AdaMix's merging), which runs the slot's dropout itself."""
        down, up = self.adamix_down, self.adamix_up
        adapter = FfnAdapter(up.shape[0], down.shape[1], self.activation, float(getattr(self.base_layer, "p", 0.0)))
        adapter.to(device=down.device, dtype=down.dtype)
        adapter.down.weight.copy_(down.mean(dim=0))
        adapter.down.bias.copy_(self.adamix_down_bias.mean(dim=0))
        adapter.up.weight.copy_(up)
        adapter.up.bias.copy_(self.adamix_up_bias)
        adapter.train(self.training)
        return adapter
