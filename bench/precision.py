"""Time the distillation step in fp32 and in bf16 autocast (PruneConfig.precision), interleaved, through the same
path `prune` takes (compressor.prune.distill.distill_, the HF Trainer): seconds per optimizer step.

    python bench/precision.py --teacher runs/teacher --student runs/bench/sst2/3-layers-s42/02-prune/model

The student is any pruned checkpoint of the teacher (its layers and heads are matched by the layer-wise losses).
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compressor.checkpoint import load_model  # noqa: E402
from compressor.data import load_data  # noqa: E402
from compressor.prune.config import PruneConfig  # noqa: E402
from compressor.prune.distill import distill_  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=ROOT / "samples/data/sst2/train.tsv")
    parser.add_argument("--steps", type=int, default=60, help="Optimizer steps per timing.")
    parser.add_argument("--rounds", type=int, default=2, help="fp32 / bf16 pairs, interleaved.")
    args = parser.parse_args(argv)
    (teacher, tokenizer), (student, _) = load_model(args.teacher), load_model(args.student)
    data = load_data(args.data, max_rows=args.steps * 32 * 2)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for precision in times:
            model = copy.deepcopy(student)
            config = PruneConfig(
                recover="distill",
                recover_steps=args.steps,
                hidden_weight=1.0,
                attention_weight=1.0,
                lr=2e-4,
                precision=precision,
            )
            start = time.perf_counter()
            distill_(model, teacher, tokenizer, config, data=data, quiet=True)
            times[precision].append((time.perf_counter() - start) / args.steps)
    print(f"{platform.processor() or platform.machine()}, batch 32, {args.steps} steps x {args.rounds} rounds")
    best = {k: min(v) for k, v in times.items()}
    for precision, value in best.items():
        print(f"{precision}: {value:.3f} s/step (best of {args.rounds})")
    print(f"bf16 speed-up: {best['fp32'] / best['bf16']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
