from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app, main
from compressor.checkpoint import model_fingerprint
from compressor.errors import ConfigError, ModelError
from tests.models import save_tiny_checkpoint, write_tiny_data

runner = CliRunner()
TINY = ["--max-length", "64", "--seq-len", "32"]  # the tiny checkpoint has 64 positions


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model")


def test_export_writes_an_artifact_and_prints_json(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    data = write_tiny_data(tmp_path / "eval.tsv", 20)
    args = ["export", str(checkpoint), "--out", str(out), "--fuse", "off", "--eval-data", str(data), "--json", *TINY]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["quantize"] == "dynamic" and summary["fusion"] in ("plain", "plain+sum-norms")  # --fuse off
    assert summary["agreement"] >= 0.99 and summary["accuracy_samples"] == 20
    assert 0 <= summary["accuracy"] <= 1 and summary["out"] == str(out)
    manifest = json.loads((out / "compressor.json").read_text())
    assert manifest["source"] == {
        "model": str(checkpoint),
        "path": str(checkpoint),
        "weights_sha256_16": model_fingerprint(checkpoint),
    }
    assert manifest["files"]["model.onnx"]["bytes"] == summary["model_bytes"]
    assert manifest["accuracy"]["final"] == summary["accuracy"]


def test_existing_out_needs_force(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "x").write_text("x")
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(out), *TINY])
    assert isinstance(result.exception, ConfigError) and result.exception.exit_code == 2
    assert "--force" in str(result.exception)
    assert (out / "x").exists()


def test_unknown_quantize_mode_is_a_usage_error(checkpoint: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / "a"), "--quantize", "int4"])
    assert isinstance(result.exception, ConfigError) and "`quantize`" in str(result.exception)
    assert not (tmp_path / "a").exists()


def test_missing_model_fails_with_one_red_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["compressor", "export", str(tmp_path / "nope"), "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == ModelError.exit_code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: model") and "not found" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_bad_option_value_exits_2(checkpoint: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    argv = ["compressor", "export", str(checkpoint), "--out", str(tmp_path / "a"), "--gate", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "`gate`" in capsys.readouterr().err


def test_out_holding_the_model_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    model = save_tiny_checkpoint(tmp_path / "models" / "tiny")
    argv = ["compressor", "export", str(model), "--out", str(tmp_path / "models"), "--force", *TINY]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: --out `{tmp_path / 'models'}` contains the input `{model}`; replacing it would delete that input: "
        "choose another --out"
    )
    assert (model / "model.safetensors").is_file()


def test_help_shows_an_example() -> None:
    result = runner.invoke(app, ["export", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--quantize" in result.output
    assert "--per-channel / --per-tensor" in result.output and "--eval-data" in result.output
