from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor.checkpoint import load_model
from compressor.data import load_data
from compressor.errors import ConfigError, DataError
from compressor.finetune import finetune
from compressor.merge import load_run, merge_run
from compressor.methods.base import METHODS
from compressor.methods.lora import LoraConfig
from compressor.train.config import TrainConfig
from tests.models import encode, save_tiny_checkpoint, write_tiny_data

FAST = TrainConfig(epochs=1, max_steps=6, batch_size=8, save_steps=3, logging_steps=2, lr=1e-3)


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path]:
    return save_tiny_checkpoint(tmp_path / "base"), write_tiny_data(tmp_path / "train.tsv", 40)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_finetune_then_merge_keeps_logits(method: str, setup: tuple[Path, Path], tmp_path: Path) -> None:
    base, train_file = setup
    data = load_data(train_file)
    cfg = METHODS.get(method).config_cls()
    report = finetune(str(base), method, cfg, FAST, data=data, eval_data=data, out_dir=tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "adapter.safetensors").is_file()
    assert 0 <= report.metrics["eval_accuracy"] <= 1
    assert report.metrics["steps"] == 6
    trained, tok, _ = load_run(tmp_path / "run")
    merged = merge_run(tmp_path / "run", tmp_path / "merged")
    assert merged.max_abs_diff <= 1e-4
    loaded, _ = load_model(tmp_path / "merged")
    batch = encode(tok)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, trained(**batch).logits, atol=1e-4, rtol=1e-4)
    base_model, _ = load_model(base)
    assert set(loaded.state_dict()) == set(base_model.state_dict())
    if method == "lora":
        assert report.trainable < report.total * 0.5
        assert not any(".partial" in p.name for p in tmp_path.iterdir())


def test_lora_trains_only_adapters_and_head(setup: tuple[Path, Path], tmp_path: Path) -> None:
    from compressor.methods.base import trainable_parameters

    base, _ = setup
    model, _ = load_model(base)
    model = METHODS.get("lora").inject(model, LoraConfig(rank=2))
    names = trainable_parameters(model)
    assert names and all("lora_" in n or "classifier" in n for n in names)


def test_lora_config_rejects_bad_rank() -> None:
    with pytest.raises(ConfigError, match="rank"):
        LoraConfig(rank=0)


def test_single_class_data_is_refused(setup: tuple[Path, Path], tmp_path: Path) -> None:
    base, _ = setup
    one = tmp_path / "one.tsv"
    one.write_text("sentence\tlabel\ngood\t1\ngreat\t1\n")
    with pytest.raises(DataError, match="single class"):
        finetune(
            str(base),
            "full",
            METHODS.get("full").config_cls(),
            FAST,
            data=load_data(one),
            eval_data=None,
            out_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()


def test_interrupted_finetune_resumes_from_checkpoint(setup: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    base, train_file = setup
    data = load_data(train_file)
    calls = {"n": 0}
    from compressor.methods import base as mbase

    original = mbase.adapter_state

    def boom(*args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(mbase, "adapter_state", boom)
    with pytest.raises(KeyboardInterrupt):
        finetune(
            str(base),
            "full",
            METHODS.get("full").config_cls(),
            FAST,
            data=data,
            eval_data=None,
            out_dir=tmp_path / "run",
            quiet=True,
        )
    assert not (tmp_path / "run").exists()
    assert (tmp_path / ".run.partial" / "checkpoints").is_dir()
    monkeypatch.setattr(mbase, "adapter_state", original)
    report = finetune(
        str(base),
        "full",
        METHODS.get("full").config_cls(),
        FAST,
        data=data,
        eval_data=None,
        out_dir=tmp_path / "run",
        resume=True,
        quiet=True,
    )
    assert calls["n"] == 1
    assert report.metrics["steps"] >= 6  # continued from checkpoint-6, not from zero
    assert not (tmp_path / ".run.partial").exists()
    assert (tmp_path / "run" / "adapter.safetensors").is_file()
