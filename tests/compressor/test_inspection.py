from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compressor.arch.parts import count_parameters
from compressor.arch.surgery import prune_ffn_, prune_heads_
from compressor.checkpoint import load_model, save_model
from compressor.errors import ConfigError
from compressor.inspection import detect, inspect_path
from tests.artifacts import build_tiny_artifact
from tests.models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("insp") / "artifact")


def test_inspect_artifact(artifact: Path, tmp_path: Path) -> None:
    info = inspect_path(artifact)
    assert info["kind"] == "artifact" and info["integrity"] == "ok"
    assert info["ops"]["MatMul"] >= 2 * 6  # q, k, v, o, ffn in, ffn out per layer (some may become Gemm)
    assert info["ops"]["Softmax"] == 2  # one per layer
    assert info["files"]["model.onnx"] == (artifact / "model.onnx").stat().st_size
    assert info["total_bytes"] == sum(p.stat().st_size for p in artifact.iterdir())
    assert info["opset"] == 17 and info["quantization"] == {"mode": "none"}

    tampered = Path(shutil.copytree(artifact, tmp_path / "t"))
    (tampered / "model.onnx").write_bytes((artifact / "model.onnx").read_bytes() + b"\x00")
    info = inspect_path(tampered)
    assert "does not match the hash" in info["integrity"] and "not an ONNX model" in info["integrity"]
    assert info["ops"] == {}


def test_inspect_pruned_checkpoint(tmp_path: Path) -> None:
    model = tiny_model(0)
    prune_heads_(model, 0, [1, 3])
    prune_heads_(model, 1, [])  # a layer with no heads left
    prune_ffn_(model, 1, list(range(10)))
    save_model(model, tiny_tokenizer(tmp_path / "tok"), tmp_path / "ckpt")
    info = inspect_path(tmp_path / "ckpt")
    assert info["kind"] == "checkpoint" and info["pruned"] is True
    assert [(r["heads"], r["intermediate"]) for r in info["layers"]] == [(2, 37), (0, 10)]
    loaded, _ = load_model(tmp_path / "ckpt")
    assert info["params"]["total"] == count_parameters(loaded) == count_parameters(model)
    assert sum(r["params"] for r in info["layers"]) == info["params"]["encoder"]
    assert info["layers"][1]["params"] < info["layers"][0]["params"]


def test_inspect_an_interrupted_run(tmp_path: Path) -> None:
    from compressor.stages.rundir import Run

    run_path = tmp_path / "run"
    run = Run.open(run_path, resume=False, force=False, recipe_name="sst2-fast")  # run.json goes first
    (run_path / "recipe.json").write_text('{"name": "sst2-fast", "model": "minilm"}', encoding="utf-8")
    stage = run.begin("finetune", "finetune", "adapter", {"config": {}}, {})  # what the runner does, in order
    stage.out.mkdir()
    (stage.out / "adapter.safetensors").write_bytes(b"\0")
    run.finish(stage, {"method": "full"})
    run.write_index()
    run.begin("merge", "merge", "model", {"config": {}}, {})  # interrupted here
    info = inspect_path(run_path)  # no report.md yet
    assert info["kind"] == "run" and info["stages"] == ["01-finetune", "02-merge"]
    report = info["report"]
    assert "recipe `sst2-fast` on model `minilm`" in report
    assert f"unfinished: 02-merge; continue with `compressor run RECIPE --out {run_path} --resume`" in report


def test_inspect_unknown_dirs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not an artifact"):
        detect(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not found"):
        detect(tmp_path / "missing")
