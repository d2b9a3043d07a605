"""ONNX Runtime transformer fusion, and a check that it fused what the model's structure implies.

Fusion can fail silently (an exporter change is enough to break a pattern), so a fused graph is only trusted
after counting its fused nodes: one attention node per layer that keeps heads, one GELU node per layer that
keeps FFN neurons, and a SkipLayerNormalization per residual that has a real projection in front of it.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnxruntime.transformers

from compressor.errors import ExportError
from exporters.onnx.specs import ExportSpec

logger = logging.getLogger(__name__)


def fuse_graph(src: Path, dst: Path, spec: ExportSpec) -> None:
    """Run ORT's Python fusions (opt_level 0: no session-level rewrite baked into the file)."""
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet_fusion_logs():
        # num_heads=0 / hidden_size=0: detected per layer from the graph, as pruned layers differ in head count
        optimized = optimize_model(
            str(src), model_type=spec.optimizer_model_type, num_heads=0, hidden_size=0, opt_level=0, use_gpu=False
        )
        optimized.save_model_to_file(str(dst))


@contextmanager
def _quiet_fusion_logs() -> Iterator[None]:
    """ORT's fusion modules log each step (and expected mismatches on pruned layers) under top-level names
    (`fusion_attention`, `onnx_model`, …); the fused-op check reports what matters instead."""
    folder = str(Path(onnxruntime.transformers.__file__).parent)
    names = [name for name, mod in list(sys.modules.items()) if str(getattr(mod, "__file__", "")).startswith(folder)]
    loggers = [logging.getLogger(name.rpartition(".")[2]) for name in names] + [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def expected_fused_ops(structure: dict[str, Any], spec: ExportSpec | None = None) -> dict[str, int]:
    """Fused nodes a complete fusion produces for `structure` (skip-norms: a lower bound), as far as ORT's fusion
    matches the family's graph (`spec`: DistilBERT's attention is not fused; ELECTRA's head adds a GELU)."""
    layers = structure["layers"]
    with_heads = sum(1 for e in layers if e["heads"])
    with_ffn = sum(1 for e in layers if e["intermediate"] > 0)
    gelu = with_ffn + int(structure.get("adapter_gelus", 0))  # a kept FFN adapter with a GELU adds one
    attention = with_heads if spec is None or spec.fused_attention else 0
    gelu += spec.head_gelu if spec is not None else 0
    return {"attention": attention, "gelu": gelu, "skip_layer_norm": with_heads + with_ffn}


def fused_op_counts(model: onnx.ModelProto, spec: ExportSpec) -> dict[str, int]:
    counts = Counter(node.op_type for node in model.graph.node)
    return {
        "attention": sum(counts[op] for op in spec.attention_ops),
        "gelu": sum(counts[op] for op in spec.gelu_ops),
        "skip_layer_norm": sum(counts[op] for op in spec.skip_norm_ops),
    }


@dataclass
class FusionCheck:
    counts: dict[str, int]
    expected: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_fused_ops(model: onnx.ModelProto, structure: dict[str, Any], spec: ExportSpec) -> FusionCheck:
    """Compare fused-node counts with the structure: attention and GELU exactly, skip-norms at least."""
    counts = fused_op_counts(model, spec)
    expected = expected_fused_ops(structure, spec)
    problems = []
    for kind in ("attention", "gelu"):
        if counts[kind] != expected[kind]:
            problems.append(f"{counts[kind]} fused {kind} nodes, expected {expected[kind]}")
    if counts["skip_layer_norm"] < expected["skip_layer_norm"]:
        problems.append(
            f"{counts['skip_layer_norm']} fused skip_layer_norm nodes, expected at least {expected['skip_layer_norm']}"
        )
    return FusionCheck(counts, expected, problems)


def enforce(check: FusionCheck, *, strict: bool) -> None:
    """`--strict`: an incomplete fusion is an error; otherwise a warning (the graph is still correct)."""
    if check.ok:
        return
    message = "ORT fusion is incomplete: " + "; ".join(check.problems)
    if strict:
        raise ExportError(message + " (--strict); export with --fuse off, or without --strict to accept it")
    logger.warning("%s; the fused graph is still checked for parity and timed", message)


def unfuse_residual_norms_(model: onnx.ModelProto) -> int:
    """Write each residual Add that feeds a LayerNormalization as a two-input Sum, in place; returns how many.

    Same arithmetic (a + b), standard ONNX, but ONNX Runtime's session-level SkipLayerNormalization fusion matches
    only `Add`, so the graph keeps a plain LayerNormalization: on CPU at 1 thread the fused SkipLayerNormalization
    kernel measured several times slower than Add + LayerNormalization here (docs/benchmarks.md). The export keeps
    this form only where it measures faster.
    """
    initializers = {i.name for i in model.graph.initializer}
    consumers: Counter[str] = Counter(name for node in model.graph.node for name in node.input)
    normalised = {node.input[0] for node in model.graph.node if node.op_type == "LayerNormalization"}
    changed = 0
    for node in model.graph.node:
        activations = len(node.input) == 2 and not any(name in initializers for name in node.input)
        if node.op_type == "Add" and activations and node.output[0] in normalised and consumers[node.output[0]] == 1:
            node.op_type = "Sum"
            changed += 1
    return changed
