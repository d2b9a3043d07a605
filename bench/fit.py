"""How well checkpoints fit their training data against how they do on validation data (in PyTorch).

    python bench/fit.py runs/teacher runs/bench/sst2/3-layers-sparse-s42/02-prune/model \
        --train samples/data/sst2/train.tsv --eval samples/data/sst2/validation.tsv --rows 2000

A distilled student that scores above its teacher on the training rows but below it on validation has learnt the
labels past the teacher's own fit: what `prune --label-weight` (less weight on the labels) addresses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compressor.checkpoint import load_model  # noqa: E402
from compressor.data import load_data  # noqa: E402
from compressor.train.loop import evaluate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="Checkpoint directories (or `minilm`).")
    parser.add_argument("--train", required=True, help="The training file the checkpoints learnt from.")
    parser.add_argument("--eval", required=True, help="Validation file.")
    parser.add_argument("--rows", type=int, default=2000, help="Training rows sampled (default 2000).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train = load_data(args.train).sample(args.rows, seed=args.seed)
    valid = load_data(args.eval)
    rows, held = len(train.texts), len(valid.texts)
    print(f"| checkpoint | accuracy on {rows} training rows | accuracy on {held} validation rows |")
    print("|---|---|---|")
    for path in args.checkpoints:
        model, tokenizer = load_model(path)
        fit, held_out = evaluate(model, tokenizer, train), evaluate(model, tokenizer, valid)
        print(f"| {path} | {100 * fit['accuracy']:.2f} | {100 * held_out['accuracy']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
