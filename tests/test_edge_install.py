"""The edge install: `pip install compressor` (no extras) into a fresh virtualenv runs `predict`, `benchmark` and
`inspect` on an artifact with torch absent, and a training command says how to install the training stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.artifacts import build_tiny_artifact

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: object, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kwargs)


@pytest.mark.slow
def test_edge_install_predicts_without_torch(tmp_path: Path) -> None:
    artifact = build_tiny_artifact(tmp_path / "artifact")
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    pip = _run(venv / "bin" / "pip", "install", "-q", ROOT)
    assert pip.returncode == 0, pip.stderr[-2000:]
    python = venv / "bin" / "python"
    for heavy in ("torch", "transformers", "datasets", "onnx"):
        probe = _run(python, "-c", f"import {heavy}")
        assert probe.returncode != 0, f"{heavy} was installed by the edge install"

    compressor = venv / "bin" / "compressor"
    predicted = _run(compressor, "predict", artifact, "a great movie", "an awful film")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(rows) == 2 and all(set(r) == {"label", "score"} and 0 <= r["score"] <= 1 for r in rows)

    data = tmp_path / "val.tsv"
    data.write_text("sentence\tlabel\na great movie\t1\nan awful film\t0\n", encoding="utf-8")
    bench = _run(
        compressor,
        "benchmark",
        artifact,
        "--data",
        data,
        "--seq-len",
        32,
        "--runs",
        3,
        "--warmup",
        1,
        "--json",
        "-",
        "-q",
    )
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert json.loads(bench.stdout)["results"][0]["eval_rows"] == 2

    inspected = _run(compressor, "inspect", artifact, "--json")
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    assert json.loads(inspected.stdout)["kind"] == "artifact"

    training = _run(compressor, "finetune", "minilm", "--data", data, "--out", tmp_path / "ft", "-q")
    assert training.returncode == 1
    errors = [line for line in training.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "pip install 'compressor[train]'" in errors[0], training.stderr[-2000:]
    assert "Traceback" not in training.stderr
    assert not (tmp_path / "ft").exists()
