from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app, main
from compressor.sensitivity.plan import Plan
from tests.models import save_tiny_checkpoint, write_tiny_data


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("analyse")
    return save_tiny_checkpoint(root / "model"), write_tiny_data(root / "train.tsv", 24)


def test_analyse_writes_plan_and_prints_the_table(inputs, tmp_path: Path) -> None:  # noqa: ANN001
    model, data = inputs
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "analyse",
            str(model),
            "--data",
            str(data),
            "--out",
            str(out),
            "--samples",
            "16",
            "--budget",
            "params=0.6",
            "--min-heads",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "heads kept" in result.stdout and f"plan: {out / 'plan.json'}" in result.stdout
    plan = Plan.load(out / "plan.json")
    assert plan.scorer == "head-gradient" and plan.min_heads == 0
    assert 0.59 <= plan.predicted["params"]["fraction"] <= 0.6
    assert (out / "heatmap.png").is_file() and (out / "sensitivity.json").is_file()


def test_analyse_json_output(inputs, tmp_path: Path) -> None:  # noqa: ANN001
    model, data = inputs
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "analyse",
            str(model),
            "--data",
            str(data),
            "--out",
            str(out),
            "--samples",
            "16",
            "--scorer",
            "magnitude",
            "--budget",
            "flops=0.5",
            "--json",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scorer"] == "magnitude" and summary["paths"]["plan"] == str(out / "plan.json")
    assert summary["plan"]["predicted"]["flops"]["fraction"] <= 0.5


def _run(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["compressor", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code or 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("budget", "match"),
    [
        (["params=1.5"], "must be in (0, 1]; got 1.5"),
        (["params=0.5,flops=0.5"], "give exactly one of params=F, flops=F or latency-ms=T; got 2 (params, flops)"),
        (["params=0.5 latency-ms=3"], "got 2 (params, latency)"),
        (["heads=0.5"], "unknown key `heads`"),
    ],
)
def test_bad_budgets_exit_2_with_one_line(inputs, tmp_path: Path, monkeypatch, capsys, budget, match) -> None:  # noqa: ANN001
    model, data = inputs
    args = ["analyse", str(model), "--data", str(data), "--out", str(tmp_path / "out"), "--quiet"]
    for item in budget:  # a single option: one string, split on commas or spaces
        args += ["--budget", item]
    code, err = _run(args, monkeypatch, capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and match in errors[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(inputs, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    model, data = inputs
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, err = _run(["analyse", str(model), "--data", str(data), "--out", str(out), "--quiet"], monkeypatch, capsys)
    assert code == 2 and "--force" in err and (out / "keep.txt").exists()
