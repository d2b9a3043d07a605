"""bench/sst2.py end to end on a tiny checkpoint: every stage, the interleaved benchmark, the docs it writes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bench import report, sst2, steps
from bench.config import QUICK, ROOT, BenchConfig
from compressor.errors import ConfigError
from tests.models import save_tiny_checkpoint, write_tiny_data

INTRO = "# Benchmarks\n\nWritten by hand: must survive.\n\n"
FOOTER = "\n## Other results\n\nAlso kept.\n"


def tiny_config(tmp_path: Path, **overrides: object) -> BenchConfig:
    values = dict(
        model=str(save_tiny_checkpoint(tmp_path / "ckpt")),
        train_file=write_tiny_data(tmp_path / "train.tsv", 48),
        eval_file=write_tiny_data(tmp_path / "validation.tsv", 16),
        out=tmp_path / "out",
        docs=tmp_path / "docs",
        train_samples=24,
        batch_size=8,
        methods=("full",),
        points=("medium",),
        plan_samples=8,
        export_eval_samples=8,
        timing_runs=2,
        threads=(1, 2),
        seq_len=32,
        throughput_batch=4,
        runs=4,
        warmup=1,
        batch_runs=2,
        batch_warmup=0,
        fuse="off",
        quiet=True,
        command="python bench/sst2.py --tiny-test",
    )
    values.update(overrides)
    return BenchConfig(**values)


def test_run_writes_table_json_and_plot_and_reuses_stages(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    cfg.docs.mkdir(parents=True)
    md = cfg.docs / report.MARKDOWN
    md.write_text(INTRO + f"{report.START}\nstale table\n{report.END}\n" + FOOTER, encoding="utf-8")

    result = sst2.run(cfg)

    names = [r["name"] for r in result["rows"]]
    assert names == ["optimum-fp32", "optimum-int8", "ours-medium", "full-medium"]
    saved = json.loads((cfg.docs / report.JSON_FILE).read_text(encoding="utf-8"))
    assert [r["name"] for r in saved["rows"]] == names
    assert saved["budget"]["train_samples"] == 24 and saved["eval_rows"] == 16
    fp32 = saved["rows"][0]
    for row in saved["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert set(row["latency"]) == {"1", "2"}
        for per_thread in row["latency"].values():
            assert per_thread["b1_fixed"]["p50"] > 0 and per_thread["b1_fixed"]["seq_len"] == 32
            assert per_thread["b1_real"]["runs"] == 4 and per_thread["bN_real"]["batch"] == 4
    # the full method row is the medium operating point: one artifact, measured once
    assert saved["rows"][2]["artifact"] == saved["rows"][3]["artifact"]
    # ours is pruned: smaller than the dense fp32 baseline, and the targets are computed from these numbers
    ours = saved["rows"][2]
    assert ours["parameters_after"] < ours["parameters"] and ours["model_bytes"] < fp32["model_bytes"]
    check = next(c for c in saved["targets"]["operating_point"]["rows"] if c["name"] == "ours-medium")
    assert check["values"]["smaller_than_fp32"] == pytest.approx(fp32["model_bytes"] / ours["model_bytes"])
    assert check["values"]["speedup_vs_fp32"] == pytest.approx(report.p50(fp32, 2) / report.p50(ours, 2))
    assert check["met"]["smaller_than_fp32"] == (check["values"]["smaller_than_fp32"] >= 8)

    text = md.read_text(encoding="utf-8")
    assert text.startswith(INTRO) and text.endswith(FOOTER) and "stale table" not in text
    assert text.count(report.START) == 1 and text.count(report.END) == 1
    assert cfg.command in text and "### Results at 1 thread" in text and "### Results at 2 threads" in text
    assert "67,349" in text  # the full budget, and why it is not used, is stated
    png = (cfg.docs / report.PLOT).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    again = sst2.run(cfg)  # every stage is cached: only the measurements run again
    assert again["stages"] and all(s["cached"] for s in again["stages"].values())
    assert set(again["stages"]) == set(result["stages"])


def _fake_result(ours_p50: float, ours_bytes: int, ours_acc: float, method_acc: float, int8_p50: float = 12.0) -> dict:
    def row(name: str, kind: str, p50: float, size: int, acc: float) -> dict:
        lat = {"b1_fixed": {"p50": p50}}
        return {
            "name": name,
            "kind": kind,
            "artifact": name,
            "accuracy": acc,
            "model_bytes": size,
            "latency": {"2": lat},
            "finetune_accuracy": acc,
            "method": "lora",
        }

    return {
        "target_threads": 2,
        "rows": [
            row("optimum-fp32", "baseline", 20.0, 80_000_000, 0.90),
            row("optimum-int8", "baseline", int8_p50, 20_000_000, 0.895),
            row("ours-x", "point", ours_p50, ours_bytes, ours_acc),
            row("lora-medium", "method", ours_p50, ours_bytes, method_acc),
        ],
    }


def test_targets_follow_the_numbers() -> None:
    met = report.evaluate_targets(_fake_result(5.0, 10_000_000, 0.890, 0.886))  # every threshold met exactly
    assert met["operating_point"]["met"] and "ours-x" in met["operating_point"]["meeting"]
    assert met["methods"]["met"]
    # each threshold missed by a hair flips its own check only
    for args, broken in (
        ((5.01, 10_000_000, 0.89, 0.886), "speedup_vs_fp32"),
        ((5.0, 10_000_000, 0.89, 0.886, 9.99), "speedup_vs_optimum_int8"),
        ((5.0, 10_000_001, 0.89, 0.886), "smaller_than_fp32"),
        ((5.0, 10_000_000, 0.8899, 0.886), "accuracy_delta_pt"),
    ):
        res = report.evaluate_targets(_fake_result(*args))
        check = next(c for c in res["operating_point"]["rows"] if c["name"] == "ours-x")
        assert not res["operating_point"]["met"] and [k for k, ok in check["met"].items() if not ok] == [broken]
    assert not report.evaluate_targets(_fake_result(5.0, 10_000_000, 0.89, 0.8849))["methods"]["met"]


def test_update_section_appends_then_replaces(tmp_path: Path) -> None:
    md = tmp_path / "benchmarks.md"
    md.write_text(INTRO, encoding="utf-8")
    report.update_section(md, f"{report.START}\nfirst\n{report.END}\n")
    report.update_section(md, f"{report.START}\nsecond\n{report.END}\n")
    text = md.read_text(encoding="utf-8")
    assert text.startswith(INTRO.rstrip("\n")) and "second" in text and "first" not in text
    assert text.count(report.START) == 1


def test_quick_never_overwrites_the_recorded_table(tmp_path: Path) -> None:
    cfg = sst2.parse_args(["--quick", "--out", str(tmp_path / "q")])
    assert cfg.quick and cfg.docs == tmp_path / "q" / "docs" and cfg.methods == ("full", "lora")
    assert cfg.train_samples == QUICK["train_samples"] and cfg.command.endswith(f"--out {tmp_path / 'q'}")
    assert sst2.parse_args(["--quick", "--methods", "lora", "--train-samples", "64"]).methods == ("lora",)
    full = sst2.parse_args([])
    assert full.train_samples == 8000 and full.threads == (1, 2) and full.docs == ROOT / "docs"


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="points"):
        sst2.parse_args(["--points", "light,huge"])
    with pytest.raises(ConfigError, match="threads"):
        sst2.parse_args(["--threads", "0"])
    with pytest.raises(SystemExit):
        sst2.parse_args(["--threads", "one"])
    with pytest.raises(ConfigError, match="methods"):
        sst2.build(tiny_config(tmp_path, methods=("nope",)), None, None)  # checked before any stage runs


def test_flops_fraction_matches_the_uniform_point() -> None:
    from compressor.prune.units import prune_by_fraction_
    from compressor.sensitivity.cost import encoder_flops
    from tests.models import tiny_model

    model = tiny_model()
    kept = steps.flops_fraction(model, 0.5, 0.5, seq_len=32)
    pruned = copy.deepcopy(model)
    prune_by_fraction_(pruned, 0.5, 0.5)
    assert kept == pytest.approx(encoder_flops(pruned, 32) / encoder_flops(model, 32))
    assert steps.flops_fraction(pruned, 0.25, 0.25, seq_len=32) == 1.0  # never asks a smaller model to grow
