"""Inputs that are odd but valid: extremely long texts are truncated (never a crash), an empty string is classified.

The tiny model has only 64 positions, below the commands' default --max-length 128: inputs are truncated to what the
model can take."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.robustness.harness import expect_success

LONG_POSITIVE = "a great and lovely movie " * 4000  # 20,000 words
LONG_NEGATIVE = "awful boring plot " * 3000


@pytest.fixture(scope="module")
def long_tsv(inputs: Path) -> Path:
    path = inputs / "long.tsv"
    rows = [(LONG_POSITIVE, 1), ("so bad", 0), (LONG_NEGATIVE, 0), ("really fun", 1)] * 2
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")
    return path


def test_finetune_truncates_long_texts(cli, tmp_path: Path, ckpt: Path, long_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli(
        "finetune",
        ckpt,
        "--data",
        long_tsv,
        "--eval-data",
        long_tsv,
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--out",
        out,
    )
    expect_success(
        result,
        case="finetune on 20,000-word texts (default --max-length 128, model has 64 positions)",
        note="trains; inputs truncated to the model's 64 positions (an info line says so)",
    )
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["steps"] == 2 and 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert (out / "adapter.safetensors").is_file()
    assert "max_length 128 exceeds the model's 64 positions; truncating inputs to 64" in result.err


def test_prune_evaluates_long_texts(cli, tmp_path: Path, ckpt: Path, long_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("prune", ckpt, "--heads", "0.25", "--eval-data", long_tsv, "--out", out, "-q", "--json")
    expect_success(result, case="prune --eval-data with 20,000-word texts", note="evaluates on truncated inputs")
    assert 0.0 <= json.loads(result.out)["accuracy"] <= 1.0


def test_analyse_scores_long_texts(cli, tmp_path: Path, ckpt: Path, long_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli(
        "analyse",
        ckpt,
        "--data",
        long_tsv,
        "--scorer",
        "head-gradient",
        "--samples",
        "8",
        "--seq-len",
        "64",
        "--budget",
        "params=0.8",
        "--out",
        out,
        "-q",
        "--json",
    )
    expect_success(result, case="analyse on 20,000-word texts", note="scores on truncated inputs")
    assert (out / "plan.json").is_file()


def test_predict_empty_string(cli, artifact: Path) -> None:
    result = cli("predict", artifact, "", "-q")
    lines = [json.loads(line) for line in result.out.splitlines()]
    expect_success(result, case='predict "" (empty string)', note=f"one JSON line, e.g. {result.out.strip()}")
    assert len(lines) == 1 and lines[0]["label"] in ("negative", "positive") and 0.5 <= lines[0]["score"] <= 1.0


def test_predict_long_text_and_blank_lines(cli, artifact: Path) -> None:
    result = cli("predict", artifact, "-q", stdin=f"{LONG_POSITIVE}\n\n   \nso bad\n")
    expect_success(
        result,
        case="predict on stdin: a 20,000-word line, an empty line, a blank line",
        note="one JSON line per input line; long text truncated to the artifact's max_length",
    )
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert len(lines) == 4 and all(set(r) == {"label", "score"} for r in lines)
