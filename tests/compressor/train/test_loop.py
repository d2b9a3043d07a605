"""The training loop's progress: one line per epoch, counted against the epochs `max_steps` really covers."""

from __future__ import annotations

from pathlib import Path

import pytest

from compressor.data import load_data
from compressor.train.config import TrainConfig
from compressor.train.loop import train
from tests.models import tiny_model, tiny_tokenizer, write_tiny_data


def test_one_line_per_epoch_under_max_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_data(write_tiny_data(tmp_path / "train.tsv", 16))
    cfg = TrainConfig(max_steps=4, batch_size=8, lr=1e-4, seed=0, save_steps=100, logging_steps=1)  # 2 steps/epoch
    result = train(
        tiny_model(), tiny_tokenizer(tmp_path), cfg, data=data, eval_data=None, work_dir=tmp_path, quiet=False
    )
    assert result.steps == 4
    err = capsys.readouterr().err.replace("\r", "\n")
    lines = [line.strip() for line in err.splitlines() if line.strip().startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1.00/2", "epoch 2.00/2"], lines
    assert all("loss" in line and "steps)" in line for line in lines)
