"""Pruning-Adapter's LoRA on q, k, v with a rank per layer, through peft.

peft gives per-module ranks with `rank_pattern` (anchored regexes of module names), so no hand-written layer is
needed. Its built-in initialisations are not the one we want (kaiming-uniform A, or N(0, 1/r²) for "gaussian"),
so A is re-drawn from N(0, 0.01²) with a seeded generator right after creation; B stays 0 (ΔW = 0 at start).
"""

from __future__ import annotations

import re

import torch
from torch import nn

A_STD = 0.01  # Pruning-Adapter: A ~ N(0, 0.01²)


def add_lora(
    model: nn.Module,
    targets: dict[str, int],
    *,
    rank: int,
    alpha: float,
    dropout: float,
    classifier: list[str],
    seed: int,
) -> nn.Module:
    """Wrap `model` in a peft model with LoRA on `targets` (full module name → rank); the `classifier` modules (the
    task head's) train too."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    peft_cfg = PeftLoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        rank_pattern={re.escape(name): r for name, r in targets.items() if r != rank},
        modules_to_save=list(classifier),
        init_lora_weights=True,
    )
    wrapped = get_peft_model(model, peft_cfg)
    reinit_lora_(wrapped, seed)
    return wrapped


@torch.no_grad()
def reinit_lora_(model: nn.Module, seed: int) -> None:
    """A ~ N(0, 0.01²) from a generator seeded with `seed` (module order), B = 0."""
    from peft.tuners.lora import LoraLayer

    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, lora_a in module.lora_A.items():
                weight = lora_a.weight
                weight.copy_(torch.randn(weight.shape, generator=generator) * A_STD)
                module.lora_B[name].weight.zero_()


def lora_ranks(model: nn.Module) -> dict[str, int]:
    """Rank of every LoRA-wrapped module of a peft model, by module name (for reports and tests)."""
    from peft.tuners.lora import LoraLayer

    return {name: next(iter(m.r.values())) for name, m in model.named_modules() if isinstance(m, LoraLayer)}
