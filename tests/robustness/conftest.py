"""Shared inputs of the robustness suite, built once per session: a tiny checkpoint, data, an artifact, a run."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.artifacts import build_tiny_artifact
from tests.models import save_tiny_checkpoint, write_tiny_data
from tests.robustness.harness import Cli, set_base


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on a shared machine: one intra-op thread avoids busy-waiting for cores (5x faster here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    set_base(tmp_path_factory.getbasetemp())
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="session")
def ckpt(inputs: Path) -> Path:
    """A tiny BERT classifier (labels negative/positive; 64 positions)."""
    return save_tiny_checkpoint(inputs / "ckpt")


@pytest.fixture(scope="session")
def pruned_ckpt(inputs: Path, ckpt: Path) -> Path:
    """The tiny classifier with a quarter of its heads removed (loads through `compressor_structure`)."""
    from compressor.prune.config import PruneConfig
    from compressor.prune.io import prune_checkpoint

    prune_checkpoint(str(ckpt), inputs / "pruned", PruneConfig(heads=0.25), quiet=True)
    return inputs / "pruned"


@pytest.fixture(scope="session")
def train_tsv(inputs: Path) -> Path:
    return write_tiny_data(inputs / "train.tsv", 24)


@pytest.fixture(scope="session")
def eval_tsv(inputs: Path) -> Path:
    return write_tiny_data(inputs / "eval.tsv", 10)


@pytest.fixture(scope="session")
def artifact(inputs: Path) -> Path:
    return build_tiny_artifact(inputs / "artifact", max_length=32)


@pytest.fixture(scope="session")
def run_dir(inputs: Path, ckpt: Path, train_tsv: Path) -> Path:
    """The output of a one-step LoRA fine-tune (the input of `compressor merge`)."""
    from compressor.data import load_data
    from compressor.finetune import finetune
    from compressor.methods.lora import LoraConfig
    from compressor.train.config import TrainConfig

    data = load_data(train_tsv)
    cfg = TrainConfig(max_steps=1, batch_size=8, max_length=32, device="cpu")
    finetune(str(ckpt), "lora", LoraConfig(rank=2), cfg, data=data, eval_data=None, out_dir=inputs / "run", quiet=True)
    return inputs / "run"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, inputs: Path) -> Cli:
    return Cli(monkeypatch, capsys)


@pytest.fixture
def clone(tmp_path: Path) -> Callable[[Path, str], Path]:
    """Copy a shared input into this test's directory (to damage it there)."""

    def copy(src: Path, name: str) -> Path:
        return Path(shutil.copytree(src, tmp_path / name))

    return copy
