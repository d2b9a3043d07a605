"""PaFi configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from compressor.arch.table import LINEAR_ROLES
from compressor.errors import ConfigError


@dataclass(kw_only=True)
class PafiConfig:
    """PaFi (Liao et al., 2023): train only the pretrained entries of smallest magnitude, chosen without data."""

    kind: ClassVar[str] = "pafi"
    version: ClassVar[int] = 1

    fraction: float = field(
        default=0.005,
        metadata={
            "help": "Share k/N of the eligible weight entries that train (global ranking by |θ|); 0.005 = 0.5 %."
        },
    )
    targets: list[str] = field(
        default_factory=lambda: list(LINEAR_ROLES),
        metadata={
            "help": f"Encoder weight matrices eligible for the mask, from {', '.join(LINEAR_ROLES)} "
            "(embeddings, LayerNorms and biases never are)."
        },
    )

    def __post_init__(self) -> None:
        number = isinstance(self.fraction, (int, float)) and not isinstance(self.fraction, bool)
        if not number or not 0 < self.fraction <= 1:
            raise ConfigError(f"`fraction` must be a number in (0, 1], got {self.fraction!r}")
        bad = [t for t in self.targets if t not in LINEAR_ROLES]
        if bad or not self.targets or len(set(self.targets)) != len(self.targets):
            allowed = ", ".join(LINEAR_ROLES)
            raise ConfigError(
                f"`targets` must be a non-empty subset of {allowed} without repeats; got {self.targets!r}"
            )
