from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from compressor.arch.surgery import prune_ffn_, prune_heads_
from compressor.checkpoint import save_model
from tests.artifacts import build_tiny_artifact
from tests.cli.test_predict import assert_one_line_error, run_cli
from tests.models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("inspect") / "artifact")


def test_inspect_artifact(artifact: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    code, out, err = run_cli(["inspect", str(artifact), "-q"], monkeypatch, capsys)
    assert code == 0, err
    assert "integrity: ok" in out and "MatMul" in out and "model.onnx" in out
    code, out, _ = run_cli(["inspect", str(artifact), "--json", "-q"], monkeypatch, capsys)
    info = json.loads(out)
    assert info["kind"] == "artifact" and info["ops"]["Softmax"] == 2


def test_inspect_checkpoint_structure(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    model = tiny_model(0)
    prune_heads_(model, 0, [0])
    prune_ffn_(model, 1, list(range(5)))
    save_model(model, tiny_tokenizer(tmp_path / "tok"), tmp_path / "ckpt")
    code, out, err = run_cli(["inspect", str(tmp_path / "ckpt"), "-q"], monkeypatch, capsys)
    assert code == 0, err
    assert "pruned" in out and "unpruned" not in out
    code, out, _ = run_cli(["inspect", str(tmp_path / "ckpt"), "--json", "-q"], monkeypatch, capsys)
    assert [(r["heads"], r["intermediate"]) for r in json.loads(out)["layers"]] == [(1, 37), (4, 5)]


def test_inspect_unknown_dir(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    code, _, err = run_cli(["inspect", str(tmp_path)], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "not an artifact")


@pytest.mark.parametrize("command", ["benchmark", "predict", "inspect"])
def test_help_shows_an_example(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert f"Example: compressor {command}" in result.output
