"""AdaMix configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from compressor.arch.table import LINEAR_ROLES
from compressor.errors import ConfigError


@dataclass(kw_only=True)
class AdamixConfig:
    """AdaMix (Wang et al., 2022), LoRA-expert form: M down-projections A_i sharing one up-projection B."""

    kind: ClassVar[str] = "adamix"
    version: ClassVar[int] = 1

    experts: int = field(default=4, metadata={"help": "Number M of down-projections A_i per adapted projection."})
    rank: int = field(default=8, metadata={"help": "Rank r of each expert B·A_i."})
    alpha: float = field(default=16.0, metadata={"help": "Scale numerator: ΔW = (alpha/rank)·B·A."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the adapter input while training."})
    targets: list[str] = field(
        default_factory=lambda: ["query", "value"],
        metadata={"help": f"Projections to adapt, from {', '.join(LINEAR_ROLES)}."},
    )
    consistency: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the consistency loss between two routed passes (symmetric KL); 0 turns it off and "
            "saves the second forward pass."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the expert initialisation and of the random routing."})

    def __post_init__(self) -> None:
        for name in ("experts", "rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer, got {value!r}")
        if not self.alpha > 0:
            raise ConfigError(f"`alpha` must be positive, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"`dropout` must be in [0, 1), got {self.dropout!r}")
        if not self.consistency >= 0:
            raise ConfigError(f"`consistency` must be zero or positive, got {self.consistency!r}")
        bad = [t for t in self.targets if t not in LINEAR_ROLES]
        if bad or not self.targets or len(set(self.targets)) != len(self.targets):
            allowed = ", ".join(LINEAR_ROLES)
            raise ConfigError(
                f"`targets` must be a non-empty subset of {allowed} without repeats; got {self.targets!r}"
            )
