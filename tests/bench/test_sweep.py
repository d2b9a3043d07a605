"""bench/sweep.py end to end on tiny inputs: the user's own fine-tune (bench/teacher.py), optimum's exports of it,
recipes run into resumable run directories, one comparison; a matrix run and the headline record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.models import save_tiny_checkpoint, write_tiny_data

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_tiny_sweep_runs_and_records_its_headline(tmp_path: Path) -> None:
    base = save_tiny_checkpoint(tmp_path / "base")
    train, val = write_tiny_data(tmp_path / "train.tsv", 48), write_tiny_data(tmp_path / "val.tsv", 12)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "version": 2,
                "name": "tiny",
                "model": str(base),
                "data": {"train": str(train), "eval": str(val)},
                "stages": [
                    {"analyse": {"scorer": "magnitude", "budget": "flops=0.5", "seq_len": 32}},
                    {"prune": {"plan": "analyse", "recover": "distill", "recover_steps": 2, "batch_size": 8}},
                    {"export": {"max_length": 32, "seq_len": 32, "timing_runs": 2, "eval_samples": 8}},
                ],
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "sweep"
    sweep = {
        "name": "tiny",
        "title": "A tiny sweep",
        "out": str(out),
        "teacher": {
            "dir": str(tmp_path / "teacher"),
            "args": ["--model", str(base), "--train", str(train), "--eval", str(val), "--batch-size", "8"],
        },
        "runs": [
            {"name": "half-{seed}", "recipe": str(recipe), "matrix": {"seed": [1, 2]}, "set": ["prune.seed={seed}"]}
        ],
        "compare": {
            "data": str(val),
            "threads": 1,
            "seq_len": 32,
            "runs": 3,
            "warmup": 1,
            "real_lengths": True,
            "profile": True,
        },
        "headline": ["half-1", "half-2"],
        "targets": {"size_mb": 1000, "speedup_vs_fp32": 1000},
        "profiles": ["optimum-fp32", "half-1"],
        "dev": {"out": str(tmp_path / "dev")},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep), encoding="utf-8")
    command = [
        sys.executable,
        str(ROOT / "bench" / "sweep.py"),
        str(path),
        "--docs",
        str(tmp_path / "docs"),
        "--quiet",
    ]
    # one headline row first: the comparison of what has run, no headline yet
    part = subprocess.run([*command, "--only", "half-1"], capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert part.returncode == 0, part.stderr[-3000:]
    assert "no headline: half-2 not run yet" in part.stderr
    assert not (tmp_path / "docs" / "headline.json").exists()
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    docs = tmp_path / "docs"
    record = json.loads((docs / "bench-tiny.json").read_text(encoding="utf-8"))
    rows = {r["name"]: r for r in record["rows"]}
    assert list(rows) == ["optimum-fp32", "optimum-int8", "half-1", "half-2"]
    assert all(r["eval_rows"] == 12 for r in rows.values())
    assert set(rows["half-1"]["speedup"]) == {"optimum-fp32", "optimum-int8"}
    assert [s["key"] for s in rows["half-2"]["stages"]] == ["analyse", "prune", "export"]
    assert (docs / "tiny-pareto.png").is_file()
    assert (out / "half-1" / "run.json").is_file() and (out / "half-2" / "run.json").is_file()
    section = (docs / "benchmarks.md").read_text(encoding="utf-8")
    assert "<!-- bench:tiny -->" in section and "## A tiny sweep" in section and "`half-2`: analyse" in section
    assert "p50 ms real lengths" in section
    assert "Each setting over its rows (seeds):" in section and "| half-* | " in section  # the seeds summarised
    assert "- **Headline** (mean of `half-1`, `half-2`): accuracy " in section
    assert "  - ≤ 1000 MB: " in section and "  - ≥ 1000× faster than optimum-fp32: " in section
    assert section.count(": **met**") == 1 and section.count(": **not met**") == 1
    profile = section.split("Where the time goes", 1)[1]
    assert "| op type | optimum-fp32 | half-1 |" in profile and "all nodes" in profile  # only the rows asked for
    headline = json.loads((docs / "headline.json").read_text(encoding="utf-8"))
    accuracies = [rows["half-1"]["accuracy"], rows["half-2"]["accuracy"]]
    assert headline["accuracy"] == pytest.approx(sum(accuracies) / 2)
    assert headline["teacher_train_rows"] == 48 and headline["threads"] == 1
    assert set(headline) >= {"teacher_accuracy", "optimum_int8_accuracy", "speedup_vs_fp32", "size_mb", "command"}


def test_verdicts_name_each_target_met_or_not() -> None:
    from bench.sweep import verdicts

    record = {
        "teacher_accuracy": 0.892,
        "accuracy": 0.885,
        "speedup_vs_fp32": 8.4,
        "speedup_vs_optimum_int8": 3.2,
        "size_mb": 7.5,
    }
    targets = {"accuracy_drop_pt": 1.0, "speedup_vs_fp32": 8, "speedup_vs_optimum_int8": 3.5, "size_mb": 8}
    assert verdicts(record, targets) == [
        "  - accuracy within 1 pt of the teacher: 0.70 pt below: **met**",
        "  - ≥ 8× faster than optimum-fp32: 8.40×: **met**",
        "  - ≥ 3.5× faster than optimum-int8: 3.20×: **not met**",
        "  - ≤ 8 MB: 7.50 MB: **met**",
    ]
    assert verdicts(record | {"accuracy": 0.88}, {"accuracy_drop_pt": 1.0}) == [
        "  - accuracy within 1 pt of the teacher: 1.20 pt below: **not met**"
    ]
    assert verdicts(record | {"accuracy": 0.894}, {"accuracy_drop_pt": 1.0}) == [
        "  - accuracy within 1 pt of the teacher: 0.20 pt above: **met**"
    ]


def test_matrix_runs_expand_and_group_over_seeds() -> None:
    from bench.sweep import expand

    runs = expand(
        [
            {"name": "r{rank}-s{seed}", "matrix": {"seed": [1, 2], "rank": [8, 16]}, "set": ["a={rank}", "{{x: 1}}"]},
            {"name": "plain", "set": ["b=1"]},
        ]
    )
    assert [r["name"] for r in runs] == ["r8-s1", "r16-s1", "r8-s2", "r16-s2", "plain"]
    assert [r["group"] for r in runs] == ["r8-s*", "r16-s*", "r8-s*", "r16-s*", "plain"]
    assert runs[1]["set"] == ["a=16", "{x: 1}"] and runs[4]["set"] == ["b=1"]
