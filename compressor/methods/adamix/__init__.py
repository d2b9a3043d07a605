"""`adamix` (AdaMix): a mixture of experts with a shared up-projection, one routed at random per training step,
averaged at merge. `experts=lora`: low-rank experts on q and v, folded into the weights; `experts=adapter`: bottleneck
adapters after the FFN output projection, averaged into one adapter per layer that stays in the model."""

from __future__ import annotations

from compressor.methods.adamix.config import AdamixConfig
from compressor.methods.adamix.layers import AdamixAdapter, AdamixLinear
from compressor.methods.adamix.method import LAYERS, consistency_loss, inject_adamix
from compressor.methods.base import METHODS, Method

__all__ = ["AdamixAdapter", "AdamixConfig", "AdamixLinear", "consistency_loss", "inject_adamix"]

METHODS.register(
    "adamix",
    Method(
        config_cls=AdamixConfig,
        inject=inject_adamix,
        layers=LAYERS,
        prefix="adamix_",
        loss=consistency_loss,
        default_lr=3e-3,  # measured best of bench/methods.py's grid (8,000 SST-2 rows, 1 epoch): docs/benchmarks.md
        # Random routing: each step only the drawn A_i of every layer joins the graph, so the other experts get no
        # gradient; DDP must be told to look for unused parameters or it waits for their gradients forever (an error).
        find_unused_parameters=True,
    ),
)
