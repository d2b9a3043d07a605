from __future__ import annotations

from pathlib import Path

import pytest

from compressor.data import LabelledData, load_data
from compressor.sensitivity.masks import Batch, make_batches
from tests.models import tiny_tokenizer, write_tiny_data


@pytest.fixture(scope="package")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="package")
def data(tmp_path_factory: pytest.TempPathFactory) -> LabelledData:
    return load_data(write_tiny_data(tmp_path_factory.mktemp("data") / "train.tsv", 24))


@pytest.fixture(scope="package")
def batches(tokenizer, data: LabelledData) -> list[Batch]:  # noqa: ANN001
    return make_batches(tokenizer, data, samples=24, seq_len=32, batch_size=8, seed=0, num_labels=2)


@pytest.fixture()
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"
