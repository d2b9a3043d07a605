"""`dsee` (DSEE): low-rank plus sparse ΔW on q and v, the sparse support found data-free from W0.

Public API: `DseeConfig`, `DseeLinear`, `inject_dsee`, `find_support`/`decompose` (the support),
and the optional post-training steps `dsee_head_scores` + `dsee_prune_heads_` (structured: remove the heads whose
rows changed least) and `dsee_magnitude_prune_` (unstructured; also `unstructured_sparsity` in the config).
"""

from __future__ import annotations

from compressor.methods.base import METHODS, Method
from compressor.methods.dsee.config import SUPPORTS, DseeConfig
from compressor.methods.dsee.layers import DseeLinear
from compressor.methods.dsee.method import (
    decompose,
    default_heads_to_prune,
    dsee_head_scores,
    dsee_magnitude_prune_,
    dsee_prune_heads_,
    find_support,
    inject_dsee,
)

__all__ = [
    "SUPPORTS",
    "DseeConfig",
    "DseeLinear",
    "decompose",
    "default_heads_to_prune",
    "dsee_head_scores",
    "dsee_magnitude_prune_",
    "dsee_prune_heads_",
    "find_support",
    "inject_dsee",
]

# Our default lr: only low-rank and sparse deltas train (DSEE's BERT-base runs used 2e-4 at batch 32; on MiniLM
# with one short epoch 5e-4 ended 4 pt below full fine-tuning and 2e-3 matched it).
METHODS.register(
    "dsee",
    Method(
        config_cls=DseeConfig,
        inject=inject_dsee,
        layers=(DseeLinear,),
        prefix="dsee_",
        default_lr=2e-3,  # measured best of bench/methods.py's grid (8,000 SST-2 rows, 1 epoch): docs/benchmarks.md
    ),
)
