from __future__ import annotations

import logging
from pathlib import Path

import onnx
import pytest

from compressor.errors import ExportError
from exporters.onnx.export import torch_to_onnx, trace_feed
from exporters.onnx.optimize import check_fused_ops, enforce, expected_fused_ops, fuse_graph
from exporters.onnx.specs import EXPORT_SPECS
from tests.models import tiny_model

STRUCTURE = {  # 3 kept layers: (2 heads, 3 neurons), (0 heads, 37 neurons), (4 heads, 0 neurons)
    "layers": [
        {"source": 0, "heads": [1, 3], "intermediate": 3},
        {"source": 1, "heads": [], "intermediate": 37},
        {"source": 3, "heads": [0, 1, 2, 3], "intermediate": 0},
    ]
}


def test_expected_fused_ops_follow_the_structure() -> None:
    assert expected_fused_ops(STRUCTURE) == {"attention": 2, "gelu": 2, "skip_layer_norm": 4}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, tokenizer) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    folder = tmp_path_factory.mktemp("graphs")
    spec = EXPORT_SPECS.get("bert")
    torch_to_onnx(tiny_model(), trace_feed(tokenizer, spec), spec, folder / "plain.onnx", opset=17)
    fuse_graph(folder / "plain.onnx", folder / "fused.onnx", spec)
    return onnx.load(str(folder / "plain.onnx")), onnx.load(str(folder / "fused.onnx"))


UNPRUNED = {"layers": [{"heads": [0, 1, 2, 3], "intermediate": 37}] * 2}


def test_op_count_check_detects_an_unfused_graph(graphs) -> None:
    plain, _ = graphs
    check = check_fused_ops(plain, UNPRUNED, EXPORT_SPECS.get("bert"))
    assert not check.ok
    assert check.counts == {"attention": 0, "gelu": 0, "skip_layer_norm": 0}
    assert any("attention" in problem for problem in check.problems)


def test_op_count_check_accepts_a_complete_fusion(graphs) -> None:
    _, fused = graphs
    check = check_fused_ops(fused, UNPRUNED, EXPORT_SPECS.get("bert"))
    assert check.ok, check.problems
    assert check.counts["attention"] == 2 and check.counts["gelu"] == 2


def test_strict_fails_and_default_warns_on_incomplete_fusion(graphs, caplog) -> None:
    plain, _ = graphs
    check = check_fused_ops(plain, UNPRUNED, EXPORT_SPECS.get("bert"))
    with pytest.raises(ExportError, match="--strict"):
        enforce(check, strict=True)
    with caplog.at_level(logging.WARNING, logger="exporters.onnx.optimize"):
        enforce(check, strict=False)
    assert "fusion is incomplete" in caplog.text


def test_strict_export_fails_when_fusion_breaks(tokenizer, tmp_path: Path, monkeypatch) -> None:
    import shutil

    import exporters.onnx.optimize as optimize_module
    from exporters.onnx.export import export_onnx
    from tests.exporters.onnx.conftest import fast_config

    # fusion that silently does nothing, as after an exporter change that breaks ORT's patterns
    monkeypatch.setattr(optimize_module, "fuse_graph", lambda src, dst, spec: shutil.copyfile(src, dst))
    with pytest.raises(ExportError, match="fusion is incomplete"):
        export_onnx(tiny_model(), fast_config(fuse="on", strict=True), tokenizer=tokenizer, out_dir=tmp_path / "a")
    assert not (tmp_path / "a").exists()
