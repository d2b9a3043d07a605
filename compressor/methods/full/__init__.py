"""`full`: every weight trains; the baseline every method is compared against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from compressor.methods.base import METHODS, Method


@dataclass(kw_only=True)
class FullConfig:
    kind: ClassVar[str] = "full"
    version: ClassVar[int] = 1


def inject_full(model: nn.Module, cfg: FullConfig) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


METHODS.register("full", Method(config_cls=FullConfig, inject=inject_full, prefix="", default_lr=5e-5))
