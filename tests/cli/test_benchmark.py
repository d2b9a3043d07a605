from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.artifacts import build_tiny_artifact
from tests.cli.test_predict import assert_one_line_error, run_cli
from tests.models import write_tiny_data

FAST = ["--runs", "4", "--warmup", "1", "--seq-len", "16", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bench-cli")
    return [
        build_tiny_artifact(root / "dense", seed=0),
        build_tiny_artifact(root / "deep", seed=1, num_hidden_layers=3),
    ]


def test_benchmark_two_artifacts(artifacts: list[Path], tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    data = write_tiny_data(tmp_path / "d.tsv", n=20)
    args = [
        "benchmark",
        *map(str, artifacts),
        "--data",
        str(data),
        "--json",
        str(tmp_path / "b.json"),
        "--plot",
        str(tmp_path / "b.png"),
        "--real-lengths",
        *FAST,
    ]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert "dense" in out and "deep" in out and "speed-up" in out and "p50 real" in out
    report = json.loads((tmp_path / "b.json").read_text())
    assert [r["name"] for r in report["results"]] == ["dense", "deep"]
    assert report["results"][0]["speedup_p50"] == 1.0
    assert all(r["accuracy"] is not None and r["real"] is not None for r in report["results"])
    assert report["machine"]["threads"] == 1
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_benchmark_profile_prints_op_types_per_artifact(artifacts: list[Path], monkeypatch, capsys) -> None:  # noqa: ANN001
    code, out, err = run_cli(["benchmark", *map(str, artifacts), "--profile", *FAST], monkeypatch, capsys)
    assert code == 0, err
    profile = out.split("ONNX Runtime profile", 1)[1]
    assert "MatMul" in profile and "all nodes" in profile and "dense" in profile and "deep" in profile


def test_benchmark_json_to_stdout(artifacts: list[Path], monkeypatch, capsys) -> None:  # noqa: ANN001
    code, out, err = run_cli(["benchmark", str(artifacts[0]), "--json", "-", *FAST], monkeypatch, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["results"][0]["accuracy"] is None and report["results"][0]["fixed"]["runs"] == 4


def test_benchmark_usage_errors(artifacts: list[Path], tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    code, _, err = run_cli(
        ["benchmark", str(artifacts[0]), "--plot", str(tmp_path / "p.png"), *FAST], monkeypatch, capsys
    )
    assert_one_line_error(code, err, 2, "--data")
    code, _, err = run_cli(["benchmark", str(artifacts[0]), "--runs", "0"], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "runs")
    code, _, err = run_cli(["benchmark", str(tmp_path / "missing"), *FAST], monkeypatch, capsys)
    assert_one_line_error(code, err, 1, "not found")
    assert not (tmp_path / "p.png").exists()
