from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from exporters.onnx.export import export_onnx, torch_to_onnx, trace_feed
from exporters.onnx.sessions import batches, make_session, run_logits
from exporters.onnx.sparse import initializer_arrays, sparsify_
from exporters.onnx.specs import EXPORT_SPECS
from tests.exporters.onnx.conftest import fast_config, random_sentences
from tests.models import tiny_model


def _mostly_zero_model() -> torch.nn.Module:
    """FFN-in weights of layer 0 (37×32) with 95% zeros, as after unstructured pruning."""
    model = tiny_model()
    weight = model.bert.encoder.layer[0].intermediate.dense.weight
    with torch.no_grad():
        mask = torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) < 0.95
        weight[mask] = 0.0
    return model


def test_sparse_storage_round_trips_exactly(tokenizer, tmp_path: Path) -> None:
    spec = EXPORT_SPECS.get("bert")
    path = tmp_path / "dense.onnx"
    torch_to_onnx(_mostly_zero_model(), trace_feed(tokenizer, spec), spec, path, opset=17)
    model = onnx.load(str(path))
    before = initializer_arrays(model)
    report = sparsify_(model, 0.9)
    assert len(report.tensors) == 1 and report.tensors[0]["zero_fraction"] >= 0.9
    assert report.stored_bytes < report.dense_bytes
    assert len(model.graph.sparse_initializer) == 1
    onnx.checker.check_model(model)
    after = initializer_arrays(model)
    assert after.keys() == before.keys()
    for name, array in before.items():
        assert after[name].dtype == array.dtype and np.array_equal(after[name], array), name
    sparse_path = tmp_path / "sparse.onnx"
    onnx.save(model, str(sparse_path))
    assert sparse_path.stat().st_size < path.stat().st_size
    feeds = batches(tokenizer, random_sentences(8), None, spec.inputs, max_length=64)
    dense_logits = run_logits(make_session(path), feeds)
    assert np.array_equal(run_logits(make_session(sparse_path), feeds), dense_logits)  # bit for bit


def test_dense_weights_stay_dense(tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "dense.onnx"
    spec = EXPORT_SPECS.get("bert")
    torch_to_onnx(tiny_model(), trace_feed(tokenizer, spec), spec, path, opset=17)
    model = onnx.load(str(path))
    assert sparsify_(model, 0.5).tensors == []
    assert len(model.graph.sparse_initializer) == 0


def test_export_records_dense_and_stored_sizes_and_the_runtime_loads_it(tokenizer, tmp_path: Path) -> None:
    from exporters.runtime import Runtime

    out = tmp_path / "artifact"
    model = _mostly_zero_model()
    report = export_onnx(model, fast_config(quantize="none", fuse="off"), tokenizer=tokenizer, out_dir=out)
    record = report.manifest["sparse"]
    assert record["stored_bytes"] < record["dense_bytes"]
    assert record["model_bytes"] == (out / "model.onnx").stat().st_size < record["model_bytes_dense"]
    assert "size gain only" in record["note"]
    texts = random_sentences(6, seed=3)
    with torch.no_grad():
        expected = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(Runtime(out).logits(texts), expected, atol=1e-4, rtol=0)
