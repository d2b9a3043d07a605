"""Data-parallel training on 2 CPU processes (gloo, launched by torchrun) writes what a single process writes, and
trains the same weights when the global batch is the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.models import save_tiny_checkpoint, write_tiny_data

# 2 CPU processes over gloo, running `python -m cli.main …` in each. torchrun, not `accelerate launch --cpu`: the
# latter starts a single process whatever --num_processes says (accelerate 1.x runs several CPU processes only
# through mpirun), which made an earlier version of these tests pass without any second process.
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "cli.main"]
ARGS = ["--max-steps", "4", "--batch-size", "4", "--save-steps", "2", "--quiet"]


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}


def _run(cmd: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "adamix"])
def test_two_process_finetune_matches_single_process(method: str, tmp_path: Path) -> None:
    base = save_tiny_checkpoint(tmp_path / "base")
    data = write_tiny_data(tmp_path / "train.tsv", 64)
    common = ["finetune", str(base), "--data", str(data), "--eval-data", str(data), "--method", method, *ARGS]
    single = _run([sys.executable, "-m", "cli.main", *common, "--out", str(tmp_path / "one")], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = _run([*LAUNCH, *common, "--out", str(tmp_path / "two")], tmp_path)
    assert multi.returncode == 0, multi.stderr[-2000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    assert _shapes(one / "adapter.safetensors") == _shapes(two / "adapter.safetensors")
    assert json.loads((one / "method.json").read_text()) == json.loads((two / "method.json").read_text())
    metrics = json.loads((two / "metrics.json").read_text())
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial dirs left by any rank


@pytest.mark.slow
def test_two_processes_of_4_train_the_weights_one_process_of_8_trains(tmp_path: Path) -> None:
    """Same global batch (2 × 4 vs 1 × 8), same seeded order, no dropout in the tiny model: after 4 optimizer
    steps of full fine-tuning every weight agrees within float tolerance (gradients are averaged over ranks)."""
    import torch
    from safetensors.torch import load_file

    base = save_tiny_checkpoint(tmp_path / "base")
    data = write_tiny_data(tmp_path / "train.tsv", 64)
    common = ["finetune", str(base), "--data", str(data), "--method", "full", "--max-steps", "4", "--quiet"]
    single = _run([sys.executable, "-m", "cli.main", *common, "--batch-size", "8", "--out", "one"], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = _run([*LAUNCH, *common, "--batch-size", "4", "--out", "two"], tmp_path)
    assert multi.returncode == 0, multi.stderr[-2000:]
    one, two = (
        load_file(str(tmp_path / "one" / "adapter.safetensors")),
        load_file(str(tmp_path / "two" / "adapter.safetensors")),
    )
    start = load_file(str(base / "model.safetensors"))
    assert one.keys() == two.keys()
    moved = [k for k in one if k in start and not torch.allclose(one[k], start[k])]
    assert len(moved) > len(one) // 2  # it trained
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.slow
def test_two_process_prune_recovery_writes_once(tmp_path: Path) -> None:
    base = save_tiny_checkpoint(tmp_path / "base")
    data = write_tiny_data(tmp_path / "train.tsv", 64)
    run = _run(
        [
            *LAUNCH,
            "prune",
            str(base),
            "--heads",
            "0.5",
            "--ffn",
            "0.5",
            "--recover-steps",
            "4",
            "--batch-size",
            "4",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "pruned"),
            "--quiet",
        ],
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert [len(e["heads"]) for e in config["compressor_structure"]["layers"]] == [2, 2]


def test_a_command_closes_the_process_group_it_ran_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main closes an open process group when the command ends, also when it ends in an error: left to the
    interpreter's exit, gloo's threads made a rank abort now and then after a successful run."""
    import torch.distributed as dist

    from cli import main

    for argv, code in ((["compressor", "--help"], 0), (["compressor", "inspect", str(tmp_path / "missing")], 2)):
        store = dist.FileStore(str(tmp_path / f"store-{code}"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_:
            main.main()
        assert exit_.value.code == code
        assert not dist.is_initialized()
