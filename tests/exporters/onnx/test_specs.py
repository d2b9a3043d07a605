from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from exporters.onnx.export import torch_to_onnx, trace_feed
from exporters.onnx.specs import EXPORT_SPECS
from tests.models import tiny_model

CASES = {"bert": tiny_model}  # a tiny model per registered export spec


def test_every_registered_spec_is_tested() -> None:
    assert set(CASES) == set(EXPORT_SPECS.names())


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_export_matches_the_declared_signature(model_type: str, tokenizer, tmp_path: Path) -> None:
    spec = EXPORT_SPECS.get(model_type)
    model = CASES[model_type]()
    assert model.config.model_type == spec.model_type
    path = tmp_path / "model.onnx"
    torch_to_onnx(model, trace_feed(tokenizer, spec), spec, path, opset=spec.opset)
    graph = onnx.load(str(path)).graph
    assert tuple(i.name for i in graph.input) == spec.inputs
    assert tuple(o.name for o in graph.output) == spec.outputs
    for value in (*graph.input, *graph.output):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims[0] == "batch"
        if value.name in spec.inputs:
            assert dims == ["batch", "sequence"]
    assert onnx.load(str(path)).opset_import[0].version == spec.opset
