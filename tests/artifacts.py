"""Tiny ONNX artifacts for runtime, benchmark, predict and inspect tests (seconds to build, nothing downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

from exporters.manifest import write_manifest
from tests.models import tiny_model, tiny_tokenizer


def build_tiny_artifact(path: Path, seed: int = 0, *, max_length: int = 32, **overrides: object) -> Path:
    """Export a tiny seeded BERT classifier to an artifact directory: model.onnx, config, tokenizer, manifest."""
    model = tiny_model(seed, **overrides)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(path.parent / f".{path.name}-vocab")
    ids = torch.tensor([[2, 10, 11, 12, 3]], dtype=torch.long)  # (batch, sequence)
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,
            str(path / "model.onnx"),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    model.config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    manifest = {
        "toolchain": {"torch": torch.__version__},
        "source": {"model": f"tiny-seed-{seed}"},
        "stages": [],
        "structure": None,
        "params": {"total": sum(p.numel() for p in model.parameters())},
        "quantization": {"mode": "none"},
        "fusion": {"applied": False},
        "accuracy": None,
        "latency": None,
        "opset": 17,
        "max_length": max_length,
    }
    write_manifest(path, manifest)
    return path
