"""The `merge` stage: a fine-tuning run's adapter folded into the base weights → a checkpoint of stock modules.

Exact: the merged model's logits on real sentences must equal the unmerged model's within `atol`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from compressor.checkpoint import save_model
from compressor.errors import ConfigError, MergeError
from compressor.fs import atomic_dir
from compressor.stages.base import Context, StageBase
from compressor.stages.finetune import DELTA_NAME, PARITY_TEXTS, load_adapter_dir


@dataclass(kw_only=True)
class MergeConfig:
    kind: ClassVar[str] = "merge"
    version: ClassVar[int] = 1

    atol: float = field(default=1e-4, metadata={"help": "Max |Δlogit| allowed between the merged and unmerged model."})
    base: str | None = field(
        default=None,
        metadata={
            "help": "The base checkpoint, when it moved since fine-tuning (default: the one the run recorded); its "
            "weights must be the ones the run was trained on."
        },
    )

    def __post_init__(self) -> None:
        if not self.atol > 0:
            raise ConfigError(f"`atol` must be positive; got {self.atol!r}")


class MergeStage(StageBase):
    key = "merge"
    config_cls = MergeConfig
    output = "model"
    gives = "model"
    consumes = ("adapter",)
    path_keys: ClassVar[dict[str, tuple[str, ...]]] = {"base": ("minilm",)}
    example = "- merge: {}"

    def needs(self, config: MergeConfig) -> tuple[str, ...]:
        return ("adapter",)

    def run(self, ctx: Context, config: MergeConfig) -> dict[str, Any]:
        import torch

        from compressor.arch.parts import model_inputs
        from compressor.methods.api import merge

        model, tokenizer, method = load_adapter_dir(Path(ctx.adapter), base=config.base)
        enc = tokenizer(PARITY_TEXTS, padding=True, return_tensors="pt")
        enc = {k: v for k, v in enc.items() if k in model_inputs(model)}  # DistilBERT takes no token_type_ids
        with torch.no_grad():
            before = model(**enc).logits.float()
            merged = merge(model).eval()
            after = merged(**enc).logits.float()
        diff = float((before - after).abs().max())
        if diff > config.atol:
            raise MergeError(
                f"merged logits differ from the unmerged model by {diff:.2e} (> {config.atol:g}); merge is not exact"
            )
        with atomic_dir(ctx.out) as tmp:
            save_model(merged, tokenizer, tmp)
        summary = {"method": method, "max_abs_diff": diff, "params": sum(p.numel() for p in merged.parameters())}
        if (Path(ctx.adapter) / DELTA_NAME).is_file():  # base + stored delta; its parity was checked at fine-tuning
            summary["from_delta"] = True
        return summary

    def row(self, summary: dict[str, Any]) -> dict[str, str]:
        return super().row(summary) | {"note": f"max |Δlogit| {summary.get('max_abs_diff', 0):.1e}"}

    def describe(self, summary: dict[str, Any]) -> str:
        if summary.get("from_delta"):
            return f"rebuilt the {summary.get('method')} model from the base + its stored delta"
        return f"merged {summary.get('method')} adapter (max |Δlogit| {summary.get('max_abs_diff', 0):.1e})"
