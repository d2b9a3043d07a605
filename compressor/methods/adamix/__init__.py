"""`adamix` (AdaMix): a mixture of low-rank experts on q and v with a shared up-projection, averaged at merge."""

from __future__ import annotations

from compressor.methods.adamix.config import AdamixConfig
from compressor.methods.adamix.layers import AdamixLinear
from compressor.methods.adamix.method import consistency_loss, inject_adamix
from compressor.methods.base import METHODS, Method

__all__ = ["AdamixConfig", "AdamixLinear", "consistency_loss", "inject_adamix"]

METHODS.register(
    "adamix",
    Method(
        config_cls=AdamixConfig,
        inject=inject_adamix,
        layers=(AdamixLinear,),
        prefix="adamix_",
        loss=consistency_loss,
        default_lr=3e-3,  # measured best of bench/methods.py's grid (8,000 SST-2 rows, 1 epoch): docs/benchmarks.md
        # Random routing: each step only the drawn A_i of every layer joins the graph, so the other experts get no
        # gradient; DDP must be told to look for unused parameters or it waits for their gradients forever (an error).
        find_unused_parameters=True,
    ),
)
