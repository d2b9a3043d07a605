"""`lora`: low-rank ΔW = (α/r)·B·A on chosen projections, through the `peft` library."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from compressor.arch.parts import arch_of, encoder_linears
from compressor.arch.table import LINEAR_ROLES as TARGETS
from compressor.errors import ConfigError
from compressor.methods.base import METHODS, Method


@dataclass(kw_only=True)
class LoraConfig:
    kind: ClassVar[str] = "lora"
    version: ClassVar[int] = 1

    rank: int = field(default=8, metadata={"help": "Rank r of B·A."})
    alpha: float = field(default=16.0, metadata={"help": "Scale numerator: ΔW = (alpha/rank)·B·A."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    targets: list[str] = field(
        default_factory=lambda: ["query", "value"],
        metadata={"help": f"Projections to adapt, from {', '.join(TARGETS)}."},
    )

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"`rank` must be a positive integer, got {self.rank!r}")
        if self.alpha <= 0:
            raise ConfigError(f"`alpha` must be positive, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"`dropout` must be in [0, 1), got {self.dropout!r}")
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise ConfigError(f"`targets` must be a non-empty subset of {', '.join(TARGETS)}; got {self.targets!r}")


def target_module_names(model: nn.Module, targets: list[str]) -> list[str]:
    """Full module names of the chosen projections in every encoder layer, from the architecture table."""
    return [name for name, _ in encoder_linears(model, targets)]


def inject_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    peft_cfg = PeftLoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=target_module_names(model, cfg.targets),
        modules_to_save=arch_of(model).head_modules(),
    )
    return get_peft_model(model, peft_cfg)


def merge_lora(model: nn.Module) -> nn.Module:
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


METHODS.register(
    "lora",
    Method(
        config_cls=LoraConfig,
        inject=inject_lora,
        merge=merge_lora,
        prefix="lora_",
        default_lr=2e-3,  # measured best of bench/methods.py's grid (8,000 SST-2 rows, 1 epoch): docs/benchmarks.md
    ),
)
