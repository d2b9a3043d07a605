"""A small synthetic regression task for the tiny models: a score from the words of a sentence (each positive word
adds about one point, each negative word takes one away), and a tiny base encoder (no classification head) to
fine-tune a one-output regression head from. Written by the tests; nothing downloads."""

from __future__ import annotations

import random
from pathlib import Path

from tests.models import tiny_config, tiny_tokenizer

POSITIVE_WORDS = ("good", "great", "fun", "lovely", "wonderful", "loved")
NEGATIVE_WORDS = ("bad", "awful", "boring", "dull", "terrible", "hated")
FILLER = ("the", "movie", "film", "story", "acting", "plot", "is", "was", "and", "but", "it", "this", "very", "so")


def score_of(words: list[str]) -> float:
    """2.5 plus about one point per positive word, minus one per negative word, kept in [0, 5]."""
    raw = 2.5 + 1.1 * sum(w in POSITIVE_WORDS for w in words) - 1.1 * sum(w in NEGATIVE_WORDS for w in words)
    return min(5.0, max(0.0, raw))


def regression_rows(n: int, seed: int = 0) -> list[tuple[str, str, float]]:
    """`n` rows (sentence, second sentence, score): the score is that of both sentences' words, with a little
    noise so that the labels are not whole numbers."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        first = rng.sample(FILLER, 3) + rng.sample(POSITIVE_WORDS, rng.randint(0, 2))
        second = rng.sample(FILLER, 2) + rng.sample(NEGATIVE_WORDS, rng.randint(0, 2))
        rng.shuffle(first)
        rng.shuffle(second)
        noisy = min(5.0, max(0.0, score_of(first + second) + rng.uniform(-0.25, 0.25)))
        rows.append((" ".join(first), " ".join(second), round(noisy, 2)))
    return rows


def write_regression_data(path: Path, n: int = 64, *, seed: int = 0, pairs: bool = False) -> Path:
    """An STS-B-like tsv: `sentence` (and `sentence2` when `pairs`; else both sentences joined) and a float `label`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = regression_rows(n, seed)
    if pairs:
        body = "".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows)
        path.write_text("sentence\tsentence2\tlabel\n" + body, encoding="utf-8")
    else:
        body = "".join(f"{a} {b}\t{y}\n" for a, b, y in rows)
        path.write_text("sentence\tlabel\n" + body, encoding="utf-8")
    return path


def save_tiny_encoder(path: Path, seed: int = 0) -> Path:
    """A tiny BERT base encoder checkpoint (`BertModel`, no classification head): fine-tuning adds the head."""
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    config = tiny_config(max_position_embeddings=160)
    BertModel(config).eval().save_pretrained(path, safe_serialization=True)  # config.json: BertModel, no head
    tiny_tokenizer(path / "_tok").save_pretrained(path)
    return path
