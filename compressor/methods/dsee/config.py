"""DSEE configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from compressor.arch.table import LINEAR_ROLES
from compressor.errors import ConfigError
from compressor.schema import is_int

SUPPORTS = ("decompose", "magnitude", "random")


@dataclass(kw_only=True)
class DseeConfig:
    """DSEE (Chen et al., 2023): ΔW = s·(B·A + S⊙M) on q and v, with M a data-free sparse support of N entries."""

    kind: ClassVar[str] = "dsee"
    version: ClassVar[int] = 1

    rank: int = field(default=16, metadata={"help": "Rank r of the low-rank term B·A."})
    alpha: float = field(default=32.0, metadata={"help": "Scale numerator: s = alpha/rank."})
    support_size: int = field(
        default=16,
        metadata={
            "help": "N: entries per matrix in the sparse support M (the sparse term trains N values per matrix); "
            "0 = no sparse term (low-rank only, for ablations)."
        },
    )
    support: str = field(
        default="decompose",
        metadata={
            "help": f"How M is found from the pretrained W, one of {', '.join(SUPPORTS)}: `decompose` = largest |S| "
            "of a low-rank + sparse decomposition W ≈ L + S; `magnitude` = largest |W|; `random`."
        },
    )
    threshold: float = field(
        default=0.01,
        metadata={
            "help": "Hard threshold of the decomposition: residual entries with |value| below it are not sparse."
        },
    )
    decompose_rank: int | None = field(
        default=None,
        metadata={
            "help": "Rank cap of the decomposition's low-rank part L (default: `rank`, so S holds what B·A cannot)."
        },
    )
    iterations: int = field(default=100, metadata={"help": "Outer iterations of the decomposition."})
    rank_step: int = field(
        default=5, metadata={"help": "Directions added to the decomposition's low-rank part per outer iteration."}
    )
    targets: list[str] = field(
        default_factory=lambda: ["query", "value"],
        metadata={"help": f"Projections to adapt, from {', '.join(LINEAR_ROLES)}."},
    )
    unstructured_sparsity: float = field(
        default=0.0,
        metadata={
            "help": "Share of the smallest-|w| entries zeroed in every encoder linear that is not a target (DSEE's "
            "unstructured step; these linears are frozen, so masking them before training equals pruning and "
            "re-training the adapter); 0 = off."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random support, the decomposition sketch and A."})

    def __post_init__(self) -> None:
        for name in ("rank", "support_size", "iterations", "rank_step"):
            value = getattr(self, name)
            least = 0 if name == "support_size" else 1
            if not is_int(value) or value < least:
                kind = "a non-negative" if least == 0 else "a positive"
                raise ConfigError(f"`{name}` must be {kind} integer, got {value!r}")
        cap = self.decompose_rank
        if cap is not None and (not is_int(cap) or cap < 1):
            raise ConfigError(f"`decompose_rank` must be a positive integer or unset, got {self.decompose_rank!r}")
        if self.alpha <= 0:
            raise ConfigError(f"`alpha` must be positive, got {self.alpha!r}")
        if self.support not in SUPPORTS:
            raise ConfigError(f"`support` must be one of {', '.join(SUPPORTS)}; got {self.support!r}")
        if self.threshold < 0:
            raise ConfigError(f"`threshold` must be non-negative, got {self.threshold!r}")
        bad = [t for t in self.targets if t not in LINEAR_ROLES]
        if bad or not self.targets or len(set(self.targets)) != len(self.targets):
            raise ConfigError(
                f"`targets` must be a non-empty subset of {', '.join(LINEAR_ROLES)} without repeats; "
                f"got {self.targets!r}"
            )
        if not 0 <= self.unstructured_sparsity < 1:
            raise ConfigError(f"`unstructured_sparsity` must be in [0, 1), got {self.unstructured_sparsity!r}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank
