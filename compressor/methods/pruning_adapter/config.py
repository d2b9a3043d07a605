"""Pruning-Adapter configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from compressor.errors import ConfigError


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(kw_only=True)
class PruningAdapterConfig:
    """Pruning-Adapter: remove the least important heads (head-gradient importance on the task), then LoRA on q, k, v
    with a higher rank on the most important layers; LoRA, LayerNorms and the classifier train."""

    kind: ClassVar[str] = "pruning-adapter"
    version: ClassVar[int] = 1

    heads_fraction: float = field(
        default=0.3,
        metadata={
            "help": "Share of all heads removed before training, least important first in one global ranking "
            "(0.3 = 43 of 144 on BERT-base); 0 = no pruning."
        },
    )
    examples: int = field(default=512, metadata={"help": "Task examples the head importance is computed on."})
    batch_size: int = field(default=32, metadata={"help": "Batch size of the importance pass."})
    max_length: int = field(default=128, metadata={"help": "Truncate importance inputs to this many tokens."})
    rank: int = field(default=4, metadata={"help": "LoRA rank on q, k, v of the other layers."})
    high_rank: int = field(default=8, metadata={"help": "LoRA rank on q, k, v of the most important layers."})
    top_layers: int | None = field(
        default=None,
        metadata={
            "help": "How many layers get `high_rank` (by summed importance of their kept heads); default 4 of 12, "
            "scaled to the layer count."
        },
    )
    high_rank_layers: list[int] = field(
        default_factory=list,
        metadata={
            "help": "Source-layer ids that get `high_rank`. Empty: chosen from the head importance before training "
            "and saved here with the run (so merging needs no data); set it to choose by hand."
        },
    )
    alpha: float = field(default=16.0, metadata={"help": "LoRA scale numerator: ΔW = (alpha/r)·B·A, r per layer."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    seed: int = field(default=0, metadata={"help": "Seed of the importance sample and of the LoRA A init."})

    def __post_init__(self) -> None:
        if isinstance(self.heads_fraction, bool) or not 0 <= self.heads_fraction < 1:
            raise ConfigError(f"`heads_fraction` must be in [0, 1), got {self.heads_fraction!r}")
        for name in ("examples", "batch_size", "max_length", "rank", "high_rank"):
            if not _positive_int(getattr(self, name)):
                raise ConfigError(f"`{name}` must be a positive integer, got {getattr(self, name)!r}")
        if self.high_rank < self.rank:
            raise ConfigError(f"`high_rank` ({self.high_rank}) must be at least `rank` ({self.rank})")
        if self.top_layers is not None and not _positive_int(self.top_layers):
            raise ConfigError(f"`top_layers` must be a positive integer or unset, got {self.top_layers!r}")
        ids = self.high_rank_layers
        if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in ids) or len(set(ids)) != len(ids):
            raise ConfigError(f"`high_rank_layers` must be distinct non-negative layer ids, got {ids!r}")
        if self.alpha <= 0:
            raise ConfigError(f"`alpha` must be positive, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"`dropout` must be in [0, 1), got {self.dropout!r}")
