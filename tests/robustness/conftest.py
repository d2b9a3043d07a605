"""Shared inputs of the robustness suite, built once per session: a tiny checkpoint, data, an artifact, a run."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.artifacts import build_tiny_artifact
from tests.models import run_stage_to, save_tiny_checkpoint, write_tiny_data
from tests.robustness.harness import Cli, set_base


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

    run_stage_to("prune", PruneConfig(heads=0.25), inputs / "pruned", model=ckpt)
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
    from compressor.methods.lora import LoraConfig
    from compressor.stages.finetune import FinetuneConfig
    from compressor.train.config import TrainConfig

    train = TrainConfig(max_steps=1, batch_size=8, max_length=32, device="cpu")
    config = FinetuneConfig(method="lora", options=LoraConfig(rank=2), train=train)
    run_stage_to("finetune", config, inputs / "run", model=ckpt, train=train_tsv)
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
