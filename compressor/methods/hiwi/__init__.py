"""`hiwi` (HiWi): an adapter applied to pretrained FFN parameters, P' = P + g(P), folded away after training."""

from __future__ import annotations

from compressor.methods.base import METHODS, Method
from compressor.methods.hiwi.config import HiwiConfig
from compressor.methods.hiwi.layers import HiwiAdapter, HiwiLinear
from compressor.methods.hiwi.method import StoredDelta, delta_state, inject_hiwi, merge_hiwi, stored_delta

__all__ = [
    "HiwiAdapter",
    "HiwiConfig",
    "HiwiLinear",
    "StoredDelta",
    "delta_state",
    "inject_hiwi",
    "merge_hiwi",
    "stored_delta",
]

# Our default lr: with the bias as g's single input row, training moves P' much as training the bias directly
# would, and bias-only fine-tuning wants a large step (BitFit uses 1e-4 … 1e-3 over many epochs; one short epoch
# here wants more).
METHODS.register(
    "hiwi",
    Method(
        config_cls=HiwiConfig,
        inject=inject_hiwi,
        merge=merge_hiwi,
        prefix="hiwi_",
        default_lr=1e-2,  # measured best of bench/methods.py's grid (8,000 SST-2 rows, 1 epoch): docs/benchmarks.md
        stored=lambda model: {
            "stored_delta_params": stored_delta(model).params,
            "stored_delta_fraction": stored_delta(model).fraction,
        },
    ),
)
