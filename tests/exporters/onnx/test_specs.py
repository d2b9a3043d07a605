from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from exporters.onnx.export import spec_for, torch_to_onnx, trace_feed
from exporters.onnx.specs import EXPORT_SPECS
from tests.families import FAMILIES, family_model, family_tokenizer

CASES = sorted(FAMILIES)  # a tiny model and tokenizer of its kind per row of the family table


def test_every_registered_spec_is_tested() -> None:
    assert {FAMILIES[row].model_type for row in CASES} == set(EXPORT_SPECS.names())


@pytest.mark.parametrize("row", CASES)
def test_export_matches_the_declared_signature(row: str, tmp_path: Path) -> None:
    tokenizer = family_tokenizer(row, tmp_path / "tok")
    model = family_model(row, tokenizer)
    spec = spec_for(model)
    assert model.config.model_type == spec.model_type
    assert spec.inputs == FAMILIES[row].inputs  # no token_type_ids where the model reads none
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
