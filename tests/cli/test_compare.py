"""`compressor compare`: runs (each by its last artifact) and artifacts against baselines, in one benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.errors import ConfigError
from compressor.stages.rundir import Run
from compressor.stages.runner import run_pipeline
from tests.artifacts import build_tiny_artifact
from tests.cli.test_predict import assert_one_line_error, run_cli
from tests.models import save_tiny_checkpoint, write_tiny_data

FAST = ["--runs", "3", "--warmup", "1", "--seq-len", "16", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A baseline artifact, a finished run whose last stage is an export, and validation data."""
    root = tmp_path_factory.mktemp("compare")
    model = save_tiny_checkpoint(root / "tiny", seed=1, max_position_embeddings=160)
    val = write_tiny_data(root / "val.tsv", 12)
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"version: 2\nname: small\nmodel: {model}\ndata: {{eval: {val}}}\nstages:\n"
        "  - prune: {heads: 0.5}\n"
        "  - export: {name: small-int8, fuse: 'off', eval_samples: 8, timing_runs: 2, threads: 1}\n",
        encoding="utf-8",
    )
    run_pipeline(recipe, root / "run", quiet=True)
    return {"baseline": build_tiny_artifact(root / "dense", seed=0), "run": root / "run", "val": val}


def test_compare_a_run_with_a_baseline(inputs: dict[str, Path], tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    run, baseline = inputs["run"], inputs["baseline"]
    outputs = [
        "--json",
        str(tmp_path / "c.json"),
        "--markdown",
        str(tmp_path / "c.md"),
        "--plot",
        str(tmp_path / "p.png"),
    ]
    args = ["compare", str(run), "--baseline", f"fp32={baseline}", "--data", str(inputs["val"]), *outputs, *FAST]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    rows = [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in ("fp32", "run")]
    assert rows == ["fp32", "run"]  # the baseline first
    saved = json.loads((tmp_path / "c.json").read_text())
    first, second = saved["rows"]
    assert (first["name"], first["baseline"], first["speedup"]) == ("fp32", True, {"fp32": 1.0})
    assert (second["name"], second["baseline"], second["run"]) == ("run", False, str(run))
    assert second["artifact"] == str(run / "02-small-int8" / "artifact")  # a run stands for its last artifact
    assert [s["name"] for s in second["stages"]] == ["prune", "small-int8"] and first["stages"] == []
    assert second["speedup"]["fp32"] == pytest.approx(first["p50_ms"] / second["p50_ms"])
    assert all(r["eval_rows"] == 12 and 0 <= r["accuracy"] <= 1 for r in saved["rows"])
    assert (tmp_path / "c.md").read_text().startswith("| row |")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert f"json: {tmp_path / 'c.json'}" in out and f"plot: {tmp_path / 'p.png'}" in out


def test_compare_refusals(inputs: dict[str, Path], tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    baseline = str(inputs["baseline"])
    code, _, err = run_cli(["compare", baseline, "--baseline", baseline, *FAST], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "two rows are called `dense`; name them with NAME=PATH")
    code, _, err = run_cli(["compare", str(tmp_path / "missing"), *FAST], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, f"`{tmp_path / 'missing'}` not found; pass a run directory")
    unfinished = tmp_path / "unfinished"
    Run.open(unfinished, resume=False, force=False, recipe_name="x")  # a run that has not exported yet
    code, _, err = run_cli(["compare", str(unfinished), *FAST], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, f"run `{unfinished}` has no finished export stage")
    code, _, err = run_cli(["compare", baseline, "--plot", str(tmp_path / "p.png"), *FAST], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "--plot shows accuracy against latency: pass --data with labelled examples")
    assert not (tmp_path / "p.png").exists()
    code, _, err = run_cli(["compare", baseline, "--latency-reference", "base", *FAST], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "the latency reference `base` is not a row; name one of dense")


def test_a_plan_made_for_a_latency_budget_is_held_to_its_prediction(inputs: dict[str, Path]) -> None:
    from types import SimpleNamespace

    from compressor.stages.compare import Entry, _predicted_ms, compare
    from exporters.measure import BenchmarkConfig

    plan = {"predicted": {"latency_ms": {"before": 9.0, "after": 2.0, "fraction": 0.22}}}
    views = [SimpleNamespace(key="analyse", summary={"plan": plan}), SimpleNamespace(key="prune", summary={})]
    assert _predicted_ms(views) == 2.0
    flops_plan = {"predicted": {"latency_ms": None}}
    assert _predicted_ms([SimpleNamespace(key="analyse", summary={"plan": flops_plan})]) is None

    config = BenchmarkConfig(runs=3, warmup=1, seq_len=16, threads=1)
    entries = [
        Entry("dense", inputs["baseline"], baseline=True),
        Entry("planned", inputs["baseline"], predicted_ms=2.0),
    ]
    comparison = compare(entries, config)
    dense, planned = comparison.rows()
    assert dense["predicted_miss"] is None
    assert planned["predicted_miss"] == pytest.approx(planned["p50_ms"] / 2.0 - 1)
    headers, cells = comparison.table()
    column = headers.index("measured vs predicted")
    assert cells[0][column] == "-" and cells[1][column] == f"{100 * planned['predicted_miss']:+.1f}%"
    assert planned["predicted_relative_miss"] is None  # no reference row named

    # with a reference (the unpruned model as the plans saw it), the prediction is also held as a share of it
    assert _predicted_ms(views, "before") == 9.0
    entries[1].predicted_before_ms = 9.0
    comparison = compare(entries, config, latency_reference="dense")
    dense, planned = comparison.rows()
    share = (planned["p50_ms"] / dense["p50_ms"]) / (2.0 / 9.0) - 1
    assert dense["predicted_relative_miss"] is None and planned["predicted_relative_miss"] == pytest.approx(share)
    headers, cells = comparison.table()
    assert cells[1][headers.index("measured vs predicted, as a share of dense")] == f"{100 * share:+.1f}%"
    with pytest.raises(ConfigError, match="latency reference `nope` is not a row; name one of dense, planned"):
        compare(entries, config, latency_reference="nope")


def test_paths_under_the_root_are_recorded_relative(tmp_path: Path) -> None:
    from compressor.stages.compare import relative_paths

    root = tmp_path / "repo"
    record = {
        "rows": [{"path": str(root / "runs" / "a"), "files": [str(root / "runs" / "a" / "model.onnx"), "x"]}],
        "elsewhere": str(tmp_path / "other" / "b"),
        "prefix_only": str(root) + "-backup/c",  # shares the text, not the directory
        "n": 3,
    }
    assert relative_paths(record, root) == {
        "rows": [{"path": "runs/a", "files": ["runs/a/model.onnx", "x"]}],
        "elsewhere": str(tmp_path / "other" / "b"),
        "prefix_only": str(root) + "-backup/c",
        "n": 3,
    }
