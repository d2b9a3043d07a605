"""`pruning-adapter` (Pruning-Adapter): remove the least important heads on the task, then LoRA on q, k, v.

Public API: `PruningAdapterConfig`, `prepare_pruning_adapter` (importance → head removal → high-rank layers),
`inject_pruning_adapter`, `merge_pruning_adapter`, and the pure helpers `plan_heads`, `rank_layers`,
`default_top_layers`, `lora_ranks`.
"""

from __future__ import annotations

from compressor.methods.base import METHODS, Method
from compressor.methods.pruning_adapter.config import PruningAdapterConfig
from compressor.methods.pruning_adapter.layers import add_lora, lora_ranks, reinit_lora_
from compressor.methods.pruning_adapter.method import (
    default_top_layers,
    inject_pruning_adapter,
    merge_pruning_adapter,
    plan_heads,
    prepare_pruning_adapter,
    rank_layers,
)

__all__ = [
    "PruningAdapterConfig",
    "add_lora",
    "default_top_layers",
    "inject_pruning_adapter",
    "lora_ranks",
    "merge_pruning_adapter",
    "plan_heads",
    "prepare_pruning_adapter",
    "rank_layers",
    "reinit_lora_",
]

# Our default lr, as for `lora` (the paper's is not given for this setting).
METHODS.register(
    "pruning-adapter",
    Method(
        config_cls=PruningAdapterConfig,
        inject=inject_pruning_adapter,
        merge=merge_pruning_adapter,
        prefix="lora_",
        prepare=prepare_pruning_adapter,
        default_lr=2e-3,  # measured best of bench/methods.py's grid (8,000 SST-2 rows, 1 epoch): docs/benchmarks.md
    ),
)
