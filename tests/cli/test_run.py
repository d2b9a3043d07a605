from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import cli.demo
from cli.main import app
from compressor.stages.recipe import path_keys
from compressor.stages.recipe_text import apply_overrides
from tests.cli.test_predict import assert_one_line_error, run_cli
from tests.models import tiny_pipeline_inputs

DEMO = Path(__file__).parents[2] / "samples" / "recipes" / "minilm-sst2-fast.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("run-cli")
    return tiny_pipeline_inputs(root)


EXPORTS = ("dense-fp32", "dense-int8", "compressed-int8")  # the demo's export stages, by name


def tiny_sets(tiny: dict[str, Path]) -> list[str]:
    """The demo recipe shrunk to seconds (all of its stages kept, the dense baselines too)."""
    return [
        f"model={tiny['model']}",
        f"data.train={tiny['train']}",
        f"data.eval={tiny['eval']}",
        "finetune.train.max_steps=2",
        "finetune.train.batch_size=8",
        "prune.recover_steps=2",
        "prune.batch_size=8",
        *[f"{name}.{key}" for name in EXPORTS for key in ("eval_samples=8", "timing_runs=2", "threads=1")],
        "benchmark.runs=2",
        "benchmark.warmup=1",
        "benchmark.threads=1",
    ]


def test_run_then_resume(tiny: dict[str, Path], tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    args = ["run", str(DEMO), "--out", str(out), *[x for s in tiny_sets(tiny) for x in ("--set", s)]]
    code, stdout, err = run_cli([*args, "-q"], monkeypatch, capsys)
    assert code == 0, err
    assert "report:" not in stdout and "stage" not in stdout  # --quiet: no summary
    code, stdout, err = run_cli([*args, "--resume"], monkeypatch, capsys)
    assert code == 0, err
    assert stdout.count("reused") == 7 and all(name in stdout for name in EXPORTS)
    artifact = out / "06-compressed-int8" / "artifact"
    assert f"report: {out / 'report.html'}" in stdout and f"artifact: {artifact}" in stdout
    code, stdout, err = run_cli(
        [*args, "--resume", "--json", "-q", "--set", "compressed-int8.quantize=none"], monkeypatch, capsys
    )
    assert code == 0, err
    data = json.loads(stdout)
    assert [s["status"] for s in data["stages"]] == ["skipped"] * 5 + ["ran", "ran"]
    assert data["stages"][-2]["summary"]["quantize"] == "none"
    assert data["artifact"] == str(artifact)
    dirs = ("03-dense-fp32", "04-dense-int8", "06-compressed-int8")
    assert data["artifacts"] == {name: str(out / d / "artifact") for name, d in zip(EXPORTS, dirs, strict=True)}

    code, _, err = run_cli(args, monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "exists and is not empty; pass --resume")


@pytest.mark.parametrize(
    ("sets", "exit_code", "match"),
    [
        (["prune.hedas=0.3"], 2, "unknown key `hedas`; allowed:"),
        (["prune.heads=lots"], 2, "`heads` must be a number"),
        (["compressed-int8.quantize=int4"], 2, "`quantize` must be one of"),
        (
            ["export.quantize=none"],
            2,
            "unknown key `export`; allowed: version, name, description, model, data, or a stage of the recipe: "
            "finetune, merge, dense-fp32, dense-int8, prune, compressed-int8, benchmark",
        ),
        (["data.train=missing.tsv"], 1, "data.train `"),
        (["model=no/such/dir"], 1, "model `"),
        (["compress.level=3"], 2, "unknown key `compress`"),
    ],
)
def test_run_usage_errors(
    sets: list[str],
    exit_code: int,
    match: str,
    tmp_path: Path,
    monkeypatch,  # noqa: ANN001
    capsys,
) -> None:  # noqa: ANN001
    args = ["run", str(DEMO), "--out", str(tmp_path / "run"), *[x for s in sets for x in ("--set", s)]]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert_one_line_error(code, err, exit_code, match)
    assert not (tmp_path / "run").exists()  # validated before anything is written


def test_run_bad_recipe_file(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: minilm\nstages:\n  - squash: {}\n", encoding="utf-8")
    code, _, err = run_cli(["run", str(bad), "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "unknown stage `squash`")
    code, _, err = run_cli(["run", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "not found")


def test_demo_runs_its_recipe_and_prints_the_final_table(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:  # noqa: ANN001
    raw = apply_overrides(yaml.safe_load(DEMO.read_text()), tiny_sets(tiny), path_keys)
    recipe = tmp_path / "recipes" / "minilm-sst2-fast.yaml"
    recipe.parent.mkdir()
    recipe.write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.setattr(cli.demo, "RECIPE", recipe)
    code, stdout, err = run_cli(["demo", "--out", str(tmp_path / "demo")], monkeypatch, capsys)
    assert code == 0, err
    rows = [line.split()[0] for line in stdout.splitlines() if line.strip()]
    assert [r for r in rows if r in EXPORTS] == list(EXPORTS)  # the final table, ratios against dense-fp32
    assert "p50 ms" in stdout and "MB" in stdout and "accuracy" in stdout
    assert (tmp_path / "demo" / "report.html").is_file()


@pytest.mark.parametrize("command", ["run", "demo"])
def test_help_shows_an_example(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert f"Example: compressor {command}" in result.output
