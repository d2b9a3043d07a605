from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from exporters.manifest import write_manifest
from exporters.runtime import Runtime
from tests.artifacts import build_tiny_artifact

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["a great movie", "", "awful and boring acting " * 30]


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run `compressor ARGS` through `cli.main.main`, the error boundary: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["compressor", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def assert_one_line_error(code: int, err: str, expected_code: int, match: str) -> None:
    assert code == expected_code, err
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and match in lines[0], err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("predict") / "artifact", seed=2)


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_predict_texts_prints_json_lines(artifact: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    code, out, _ = run_cli(["predict", str(artifact), *TEXTS, "--quiet"], monkeypatch, capsys)
    assert code == 0
    results = _lines(out)
    expected = Runtime(artifact).predict(TEXTS)
    assert [r["label"] for r in results] == [e["label"] for e in expected]
    assert [r["score"] for r in results] == pytest.approx([e["score"] for e in expected], abs=1e-6)
    assert all(set(r) == {"label", "score"} for r in results)


def test_predict_reads_stdin_and_file(artifact: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS) + "\n"))
    code, out, _ = run_cli(["predict", str(artifact), "-q", "--batch-size", "2"], monkeypatch, capsys)
    assert code == 0 and len(_lines(out)) == 3  # one line per input line, the empty one included
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    code, out2, _ = run_cli(["predict", str(artifact), "-q", "--file", str(tmp_path / "in.txt")], monkeypatch, capsys)
    assert code == 0 and _lines(out2) == _lines(out)


def test_predict_usage_errors(artifact: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    code, _, err = run_cli(["predict", str(artifact), "x", "--file", str(tmp_path / "f")], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "not both")
    code, _, err = run_cli(["predict", str(artifact), "-q", "--file", str(tmp_path / "f")], monkeypatch, capsys)
    assert_one_line_error(code, err, 1, "not found")


def test_predict_pairs_splits_each_input_at_its_first_tab(artifact: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001, E501
    firsts, seconds = ["a man plays a guitar", "the film", ""], ["someone makes music\tloudly", "", "an empty first"]
    lines = [f"{a}\t{b}" for a, b in zip(firsts, seconds, strict=True)]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run_cli(
        ["predict", str(artifact), "-q", "--pairs", "--batch-size", "2", "--file", str(tmp_path / "pairs.tsv")],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    expected = Runtime(artifact).predict(firsts, seconds)
    assert [r["score"] for r in _lines(out)] == pytest.approx([e["score"] for e in expected], abs=1e-6)
    assert [e["score"] for e in expected] != pytest.approx([e["score"] for e in Runtime(artifact).predict(lines)])
    code, _, err = run_cli(["predict", str(artifact), "-q", "--pairs", lines[0], "no tab here"], monkeypatch, capsys)
    assert_one_line_error(code, err, 1, "input 2 has no tab")


def test_predict_refuses_damaged_artifacts(artifact: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    tampered = Path(shutil.copytree(artifact, tmp_path / "tampered"))
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / "model.onnx").write_bytes(bytes(data))
    code, out, err = run_cli(["predict", str(tampered), "good"], monkeypatch, capsys)
    assert_one_line_error(code, err, 1, "does not match the hash")
    assert out == ""

    no_manifest = Path(shutil.copytree(artifact, tmp_path / "no-manifest"))
    (no_manifest / "compressor.json").unlink()
    code, _, err = run_cli(["predict", str(no_manifest), "good"], monkeypatch, capsys)
    assert_one_line_error(code, err, 1, "compressor.json")

    not_onnx = Path(shutil.copytree(artifact, tmp_path / "not-onnx"))
    (not_onnx / "model.onnx").write_bytes(b"PK\x03\x04 a zip file, not a graph")
    write_manifest(not_onnx, {"max_length": 32})
    code, _, err = run_cli(["predict", str(not_onnx), "good"], monkeypatch, capsys)
    assert_one_line_error(code, err, 1, "not an ONNX model")


def test_predict_does_not_import_torch(artifact: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cli.main import app\n"
        f"result = CliRunner().invoke(app, ['predict', {str(artifact)!r}, 'so good', '', '-q'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert len(result.stdout.splitlines()) == 2, result.output\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules)\n"
        "assert not heavy, f'predict imported {heavy}'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
