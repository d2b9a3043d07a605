"""AdaMix configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from compressor.arch.table import LINEAR_ROLES
from compressor.errors import ConfigError
from compressor.schema import is_int

FORMS = ("lora", "adapter")
ACTIVATIONS = ("gelu", "relu", "silu", "tanh")  # = compressor.arch.adapters.ACTIVATIONS (that module imports torch)


@dataclass(kw_only=True)
class AdamixConfig:
    """AdaMix (Wang et al., 2022): a mixture of M experts per layer, one routed at random per training step,
    averaged into one at inference. Two expert forms:

    - `lora` (ours, the default): M down-projections A_i sharing one up-projection B on chosen projections; the
      average folds into W exactly, so the merged model is the base architecture (no inference cost).
    - `adapter` (the paper's BERT/RoBERTa form): M bottleneck adapters after the FFN output projection, sharing one
      up-projection (the paper's released BERT script: `sharing_up 1`); merging averages them into one adapter per
      layer, which stays in the model and in the exported graph.
    """

    kind: ClassVar[str] = "adamix"
    version: ClassVar[int] = 2

    # `str | int` only so that a version-1 count (`experts: 4`) reaches __post_init__ and is told about `num_experts`
    experts: str | int = field(
        default="lora",
        metadata={
            "help": "Expert form: `lora` (low-rank experts on `targets`, folded into the weights at merge: no "
            "inference cost) or `adapter` (bottleneck adapters after each FFN output projection, averaged into one "
            "adapter per layer that stays in the exported graph). The number of experts is `num_experts`."
        },
    )
    num_experts: int = field(default=4, metadata={"help": "Number M of experts per layer (per projection for lora)."})
    rank: int = field(default=8, metadata={"help": "Rank r of each expert B·A_i (lora form)."})
    alpha: float = field(default=16.0, metadata={"help": "Scale numerator: ΔW = (alpha/rank)·B·A (lora form)."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the adapter input while training (lora form)."})
    targets: list[str] = field(
        default_factory=lambda: ["query", "value"],
        metadata={"help": f"Projections to adapt (lora form), from {', '.join(LINEAR_ROLES)}."},
    )
    bottleneck: int = field(
        default=16,
        metadata={
            "help": "Width r of each adapter, hidden → r → hidden (adapter form). 16 trains as many parameters as "
            "the lora form's defaults (rank 8 on q and v)."
        },
    )
    activation: str = field(
        default="gelu",
        metadata={"help": f"Non-linearity inside each adapter (adapter form), one of {', '.join(ACTIVATIONS)}."},
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
        if self.experts not in FORMS:
            hint = " (the number of experts is `num_experts`)" if isinstance(self.experts, int) else ""
            raise ConfigError(f"`experts` must be one of {', '.join(FORMS)}{hint}; got {self.experts!r}")
        for name in ("num_experts", "rank", "bottleneck"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer, got {value!r}")
        if not self.alpha > 0:
            raise ConfigError(f"`alpha` must be positive, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"`dropout` must be in [0, 1), got {self.dropout!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"`activation` must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}")
        if not self.consistency >= 0:
            raise ConfigError(f"`consistency` must be zero or positive, got {self.consistency!r}")
        bad = [t for t in self.targets if t not in LINEAR_ROLES]
        if bad or not self.targets or len(set(self.targets)) != len(self.targets):
            allowed = ", ".join(LINEAR_ROLES)
            raise ConfigError(
                f"`targets` must be a non-empty subset of {allowed} without repeats; got {self.targets!r}"
            )

    @staticmethod
    def _migrate_v1(fields: dict[str, Any]) -> dict[str, Any]:
        """Version 1 had only the lora form, and `experts` was the number of experts."""
        fields = dict(fields)
        if "experts" in fields:
            fields["num_experts"] = fields.pop("experts")
        fields["experts"] = "lora"
        return fields
