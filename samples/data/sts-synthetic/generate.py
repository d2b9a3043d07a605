"""Write the synthetic STS-B-like sample (sentence pairs scored 0-5 by word overlap) from the bundled SST-2 text.

Each pair is an SST-2 sentence and a rewrite of it that keeps a random share of its words (in order) and mixes in
words of another sentence; the label is 5 × the Jaccard overlap of the two word sets, so similar pairs score high
and unrelated ones near 0, in steps of 0.01 like STS-B's. Deterministic (seeded):

    python samples/data/sts-synthetic/generate.py
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SST2 = HERE.parent / "sst2"


def sentences(path: Path, min_words: int = 6) -> list[str]:
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    out = [" ".join(row.split("\t")[0].split()) for row in rows]
    return sorted({s for s in out if len(s.split()) >= min_words})


def rewrite(words: list[str], other: list[str], keep: float, rng: random.Random) -> list[str]:
    """The kept words of `words` in order, with words of `other` inserted to about the same length."""
    kept = [w for w in words if rng.random() < keep]
    extra = other[: max(0, len(words) - len(kept))]
    for w in extra:
        kept.insert(rng.randint(0, len(kept)), w)
    return kept or other[:3]


def score(a: list[str], b: list[str]) -> float:
    sa, sb = set(a), set(b)
    return round(5 * len(sa & sb) / len(sa | sb), 2)


def write(path: Path, pool: list[str], n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["sentence1\tsentence2\tlabel"]
    for _ in range(n):
        first, other = rng.sample(pool, 2)
        words, filler = first.split(), other.split()
        keep = rng.choice([0.0, 1.0]) if rng.random() < 0.1 else rng.random()  # some unrelated, some identical
        second = rewrite(words, filler, keep, rng)
        lines.append(f"{first}\t{' '.join(second)}\t{score(words, second)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {n} pairs to {path}")


if __name__ == "__main__":
    write(HERE / "train.tsv", sentences(SST2 / "train.tsv"), 6000, seed=0)
    write(HERE / "validation.tsv", sentences(SST2 / "validation.tsv"), 600, seed=1)
