"""Residual norms written as Sum so ONNX Runtime cannot fuse them into SkipLayerNormalization; the export's choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from exporters.onnx.export import UNFUSED, choose_graph, torch_to_onnx, trace_feed
from exporters.onnx.optimize import unfuse_residual_norms_
from exporters.onnx.specs import EXPORT_SPECS
from tests.models import tiny_model, tiny_tokenizer


def _norm_inputs(model: onnx.ModelProto) -> list[str]:
    """Op type of the node feeding each LayerNormalization (what ORT's SkipLayerNormalization fusion matches: Add)."""
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    return [producer.get(n.input[0], "") for n in model.graph.node if n.op_type == "LayerNormalization"]


@pytest.fixture
def exported(tmp_path: Path) -> tuple[onnx.ModelProto, dict]:
    spec = EXPORT_SPECS.get("bert")
    feed = trace_feed(tiny_tokenizer(tmp_path / "tok"), spec)
    torch_to_onnx(tiny_model(num_hidden_layers=2), feed, spec, tmp_path / "plain.onnx", opset=spec.opset)
    return onnx.load(str(tmp_path / "plain.onnx")), feed


def test_every_residual_norm_is_unfused(exported: tuple[onnx.ModelProto, dict]) -> None:
    model, _ = exported
    assert _norm_inputs(model) == ["Add"] * 5
    changed = unfuse_residual_norms_(model)
    assert changed == 1 + 2 * 2  # the embeddings' norm, then attention and FFN in each of 2 layers
    assert _norm_inputs(model) == ["Sum"] * 5
    assert unfuse_residual_norms_(model) == 0  # nothing left to rewrite


def test_the_arithmetic_is_the_same(exported: tuple[onnx.ModelProto, dict]) -> None:
    model, feed = exported
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    unfuse_residual_norms_(model)
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("timings", "expected"),
    [
        ({1: {"plain": 10.0, f"plain{UNFUSED}": 8.0}}, f"plain{UNFUSED}"),
        ({1: {"plain": 10.0, f"plain{UNFUSED}": 9.8}}, "plain"),  # within 3 %: the plain graph stays
        ({1: {"plain": 10.0, f"plain{UNFUSED}": 8.0}, 2: {"plain": 6.0, f"plain{UNFUSED}": 6.5}}, "plain"),
        (
            {
                1: {"plain": 10.0, "fused": 9.0, f"plain{UNFUSED}": 8.0},
                2: {"plain": 6, "fused": 5, f"plain{UNFUSED}": 5.5},
            },
            f"plain{UNFUSED}",
        ),
        ({1: {"plain": 10.0, "fused": 9.0, f"plain{UNFUSED}": 9.9}}, "fused"),
    ],
)
def test_a_graph_other_than_plain_must_be_faster_everywhere(timings: dict, expected: str) -> None:
    assert choose_graph(timings) == expected
