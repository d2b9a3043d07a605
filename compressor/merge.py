"""`merge`: fold a fine-tuning run's adapter into the base weights → a plain checkpoint of stock modules."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.checkpoint import save_model
from compressor.errors import MergeError
from compressor.fs import atomic_dir, check_out_dir
from compressor.schema import config_from_dict, load_json

logger = logging.getLogger(__name__)

# Sentences used to check that merging kept the logits (real text, no data file needed).
PARITY_TEXTS = [
    "a gripping, beautifully acted film that stays with you.",
    "the plot is thin and the jokes fall flat.",
    "it 's neither as funny nor as clever as it thinks it is .",
    "an utterly charming and often affecting journey .",
]


@dataclass
class MergeReport:
    out_dir: Path
    method: str
    max_abs_diff: float
    parameters: int


def merge(model: nn.Module, method_name: str) -> nn.Module:
    """Fold the adapters of `method_name` in `model` into its weights (returns a model of stock modules)."""
    import compressor.methods  # noqa: F401
    from compressor.methods.base import METHODS, only_stock_modules

    merged = METHODS.get(method_name).merge(model)
    leftovers = only_stock_modules(merged)
    if leftovers:
        raise MergeError(f"method `{method_name}` left non-stock modules after merge: {', '.join(leftovers[:3])}")
    return merged


def load_run(run_dir: Path) -> tuple[nn.Module, Any, str]:
    """Re-create the trained (unmerged) model of a fine-tuning run directory: (model, tokenizer, method name)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    import compressor.methods  # noqa: F401
    from compressor.arch.surgery import apply_structure_
    from compressor.checkpoint import load_model
    from compressor.finetune import ADAPTER_NAME
    from compressor.methods.base import METHODS, load_adapter_state_

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MergeError(f"run directory `{run_dir}` not found; pass the --out of `compressor finetune`")
    if not (run_dir / ADAPTER_NAME).is_file():
        raise MergeError(f"`{run_dir}` has no {ADAPTER_NAME}; pass the --out directory of `compressor finetune`")
    method_json = load_json(run_dir / "method.json", what="method config")
    method = METHODS.get(method_json.get("kind", "?"))
    cfg = config_from_dict(method.config_cls, method_json, source=str(run_dir / "method.json"))
    base = load_json(run_dir / "base.json", what="base reference")
    labels = {int(k): v for k, v in load_json(run_dir / "labels.json", what="label map").items()}
    model, tokenizer = load_model(base["model"], num_labels=len(labels), id2label=labels)
    if (run_dir / "structure.json").is_file():
        apply_structure_(model, load_json(run_dir / "structure.json", what="structure"))
    model = method.inject(model, cfg)
    try:
        state = load_file(str(run_dir / ADAPTER_NAME))
    except (SafetensorError, OSError) as err:  # SafetensorError: a truncated or malformed file
        raise MergeError(
            f"`{run_dir / ADAPTER_NAME}` is not a readable safetensors file ({err}); rerun `compressor finetune`"
        ) from None
    load_adapter_state_(model, state)
    model.eval()
    return model, tokenizer, method_json["kind"]


@torch.no_grad()
def _logits(model: nn.Module, tokenizer: Any) -> torch.Tensor:
    enc = tokenizer(PARITY_TEXTS, padding=True, return_tensors="pt")
    return model(**enc).logits.float()


def merge_run(run_dir: Path, out_dir: Path, *, force: bool = False, atol: float = 1e-4) -> MergeReport:
    """Merge a fine-tuning run into a plain checkpoint at `out_dir`, checking logit parity within `atol`."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, force=force)
    model, tokenizer, method_name = load_run(run_dir)
    before = _logits(model, tokenizer)
    merged = merge(model, method_name)
    merged.eval()
    after = _logits(merged, tokenizer)
    diff = float((before - after).abs().max())
    if diff > atol:
        raise MergeError(
            f"merged logits differ from the unmerged model by {diff:.2e} (> {atol:g}); merge is not exact"
        )
    with atomic_dir(out_dir) as tmp:
        save_model(merged, tokenizer, tmp)
    logger.info("merged %s (%s) into %s; max |Δlogit| %.2e", run_dir, method_name, out_dir, diff)
    return MergeReport(out_dir, method_name, diff, sum(p.numel() for p in merged.parameters()))
