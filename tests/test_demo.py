"""The real demo: bundled MiniLM, bundled SST-2, whole pipeline (minutes; opt in with --run-slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NAMES = ("dense-fp32", "dense-int8", "compressed-int8")  # the demo recipe's export stages


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--out", str(tmp_path / "demo"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for name in NAMES:
        assert name in run.stdout
    bench = json.loads(next((tmp_path / "demo").glob("*-benchmark/benchmark/benchmark.json")).read_text())
    rows = {r["name"]: r for r in bench["results"]}
    assert list(rows) == list(NAMES)  # in export order; ratios against the first
    assert all(r["eval_rows"] == 872 for r in rows.values())
    assert rows["compressed-int8"]["accuracy"] >= 0.70  # fine-tuned on 2,000 rows; chance is 0.51
    assert rows["compressed-int8"]["model_bytes"] < 0.5 * rows["dense-fp32"]["model_bytes"]
    assert (tmp_path / "demo" / "report.html").is_file()
