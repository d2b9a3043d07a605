"""Resident memory an ONNX Runtime session of each artifact adds to its process, measured in a fresh process each.

    python bench/memory.py runs/bench/sst2/3-layers-sparse-s42 runs/bench/sst2/3-layers-load-s42 \
        runs/bench/sst2/optimum-fp32 --repeats 3

For each artifact (an artifact directory, or a run directory: its last artifact) and repeat, a new
Python process records its resident set (RSS) and peak RSS (ru_maxrss), creates a session with the runtime's
settings (all graph optimizations, 1 thread), runs 20 batches of one 128-token input, and records them again. The
peak is what creating the session costs at most (constant folding included); "after" is what stays. Both depend
on the allocator (glibc does not always give freed memory back), hence the repeats.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compressor.errors import CompressorError  # noqa: E402
from compressor.stages.compare import resolve  # noqa: E402
from exporters.manifest import MODEL_NAME  # noqa: E402

PROBE = r"""
import json, resource, sys
import numpy as np
import psutil
from exporters.onnx.sessions import make_session
process = psutil.Process()
rss, peak = process.memory_info().rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
session = make_session(sys.argv[1], threads=1)
feed = {i.name: np.ones((1, 128), dtype=np.int64) for i in session.get_inputs()}
for _ in range(20):
    session.run(None, feed)
print(json.dumps({
    "after_mb": (process.memory_info().rss - rss) / 1e6,
    "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1e3,
}))
"""


def model_file(path: Path) -> Path:
    """model.onnx of an artifact directory, or of a run directory's last artifact (as `compressor compare` picks)."""
    try:
        return resolve(path).artifact / MODEL_NAME
    except CompressorError as err:
        raise SystemExit(f"error: {err}") from None


def measure(model: Path) -> dict[str, float]:
    """One fresh process's RSS growth (after 20 runs) and peak growth, in MB."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(model)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=3, help="Fresh processes per artifact (default 3).")
    args = parser.parse_args(argv)
    models = {path: model_file(path) for path in args.artifacts}  # every path checked before anything is printed
    print("| artifact | file MB | peak RSS growth, MB | RSS growth after 20 runs, MB |")
    print("|---|---|---|---|")
    for path, model in models.items():
        runs = [measure(model) for _ in range(args.repeats)]
        peaks = sorted(round(r["peak_mb"]) for r in runs)
        after = sorted(round(r["after_mb"]) for r in runs)
        size = model.stat().st_size / 1e6
        print(f"| {path} | {size:.1f} | {peaks[0]}–{peaks[-1]} | {after[0]}–{after[-1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
