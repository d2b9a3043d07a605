from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.models import WORDS, tiny_tokenizer


def random_sentences(n: int, seed: int = 0) -> list[str]:
    """Varied word sequences over the tiny vocabulary (3-12 words each)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return random_sentences(100)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "artifact"


def fast_config(**overrides: object):
    """An ExportConfig sized for the tiny models (64 positions) and a short timing."""
    from exporters.onnx.config import ExportConfig

    values: dict[str, object] = {"max_length": 64, "seq_len": 32, "timing_runs": 5, "reduce_range": False}
    values.update(overrides)
    return ExportConfig(**values)
