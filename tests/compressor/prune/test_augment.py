"""Augmentation for distillation: words swapped for embedding neighbours, rows labelled by the teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import compressor.prune.api as prune_api
from compressor.data import LabelledData, load_data
from compressor.errors import ConfigError
from compressor.prune.api import prune_
from compressor.prune.augment import WordNeighbours, augment
from compressor.prune.config import PruneConfig
from tests.models import WORDS, tiny_model, tiny_tokenizer, write_tiny_data


def _embedding(tokenizer, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """Random rows in which each pair of words shares (nearly) the same row: each is the other's nearest."""
    torch.manual_seed(0)
    table = torch.randn(len(tokenizer.get_vocab()), 16)
    vocab = tokenizer.get_vocab()
    for a, b in pairs:
        table[vocab[b]] = table[vocab[a]] + 0.01 * torch.randn(16)
    return table


def test_each_word_is_replaced_by_its_nearest_word_and_the_rest_of_the_text_is_kept(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    neighbours = WordNeighbours(tokenizer, _embedding(tokenizer, [("good", "great"), ("movie", "film")]), k=1)
    assert len(neighbours) == len(WORDS) - 2  # one-letter words (a, i) and special tokens are not words
    rng = np.random.default_rng(0)
    assert neighbours.replace("Good movie, zzz!", 1.0, rng) == "Great film, zzz!"  # case kept; unknown words kept
    assert neighbours.replace("Good movie, zzz!", 1e-9, rng) == "Good movie, zzz!"


def test_augmented_rows_follow_the_originals_and_carry_the_teachers_labels(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    data = load_data(write_tiny_data(tmp_path / "train.tsv", n=20))
    teacher = tiny_model(3)
    table = teacher.bert.embeddings.word_embeddings.weight
    out = augment(data, teacher, tokenizer, copies=2, rate=0.5, seed=0, embedding=table)
    assert out.texts[: len(data)] == data.texts and out.labels[: len(data)] == data.labels
    new = out.texts[len(data) :]
    assert 0 < len(new) <= 2 * len(data) and all(t not in data.texts or t in new for t in new)
    with torch.no_grad():
        enc = tokenizer(new, padding=True, return_tensors="pt")
        expected = teacher(**enc).logits.argmax(-1).tolist()
    assert out.labels[len(data) :] == expected
    again = augment(data, teacher, tokenizer, copies=2, rate=0.5, seed=0, embedding=table)
    assert again.texts == out.texts  # seeded


def test_pairs_are_rewritten_together(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    data = LabelledData(["good movie"], [1], {0: "no", 1: "yes"}, tmp_path / "x.tsv", text_pairs=["bad film"])
    table = _embedding(tokenizer, [("good", "great"), ("bad", "awful")])
    out = augment(data, tiny_model(0), tokenizer, copies=1, rate=1.0, seed=0, embedding=table)
    assert len(out) == 2 and out.text_pairs is not None and out.text_pairs[0] == "bad film"
    assert out.text_pairs[1] != "bad film"


def test_distillation_trains_on_the_augmented_rows_for_the_same_number_of_steps(tmp_path: Path, monkeypatch) -> None:
    seen: dict[str, int] = {}

    def fake_distill(model, teacher, tokenizer, config, *, data, steps, **kwargs):
        seen["rows"], seen["steps"] = len(data), steps
        return {"steps": steps}

    monkeypatch.setattr(prune_api, "distill_", fake_distill)
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    data = load_data(write_tiny_data(tmp_path / "train.tsv", n=32))
    config = PruneConfig(heads=0.25, recover="distill", recover_epochs=1.0, batch_size=8, augment=1)
    prune_(tiny_model(), config, tokenizer=tokenizer, data=data)
    assert seen["steps"] == 4  # one pass over the 32 original rows
    assert len(data) < seen["rows"] <= 2 * len(data)


@pytest.mark.parametrize(
    ("values", "match"),
    [({"augment": -1}, "`augment` must be a number of copies"), ({"augment_rate": 0.0}, "`augment_rate` must be")],
)
def test_augment_settings_are_checked(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PruneConfig(**values)
