"""The `finetune` and `merge` stages: an adapter directory written whole (resumable from the Trainer's checkpoints),
then folded into a checkpoint of stock modules with the same logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from compressor.checkpoint import load_model
from compressor.data import load_data
from compressor.errors import DataError, MergeError
from compressor.methods.base import only_stock_modules
from compressor.methods.full import FullConfig
from compressor.methods.lora import LoraConfig
from compressor.stages import STAGES
from compressor.stages.finetune import ADAPTER_NAME, FinetuneConfig, load_adapter_dir
from compressor.stages.merge import MergeConfig
from compressor.train.config import TrainConfig
from tests.models import encode, run_stage_to, save_tiny_checkpoint, write_tiny_data

FAST = TrainConfig(epochs=1, max_steps=6, batch_size=8, save_steps=3, logging_steps=2, lr=1e-3)
FILES = ["adapter.safetensors", "base.json", "labels.json", "method.json", "metrics.json", "train.json"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune-stage")
    return {
        "base": save_tiny_checkpoint(root / "base"),
        "train": write_tiny_data(root / "train.tsv", 40),
        "eval": write_tiny_data(root / "val.tsv", 10),
    }


@pytest.fixture(scope="module")
def lora_run(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("lora") / "run"
    config = FinetuneConfig(method="lora", options=LoraConfig(rank=2), train=FAST)
    summary = run_stage_to("finetune", config, out, model=inputs["base"], train=inputs["train"], eval=inputs["eval"])
    return out, summary


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_finetune_writes_the_adapter_directory_and_a_summary(lora_run: tuple[Path, dict], inputs: dict) -> None:
    out, summary = lora_run
    assert sorted(p.name for p in out.iterdir()) == FILES  # no structure.json: LoRA does not prune
    assert not (out.parent / ".run.partial").exists()  # the Trainer's checkpoints go once the run is complete
    assert summary["method"] == "lora" and summary["metrics"]["steps"] == 6
    assert 0 <= summary["accuracy"] <= 1 and summary["accuracy"] == summary["metrics"]["eval_accuracy"]
    assert summary["trainable"] < summary["params"] * 0.5
    labels = load_data(inputs["train"]).id2label  # the training file's labels (integers, as in SST-2's files)
    assert json.loads((out / "labels.json").read_text()) == {str(k): v for k, v in labels.items()}
    assert json.loads((out / "method.json").read_text())["fields"]["rank"] == 2
    base = json.loads((out / "base.json").read_text())
    assert base["model"] == str(inputs["base"].resolve()) and len(base["fingerprint"]) == 16
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adapter_bytes"] == (out / ADAPTER_NAME).stat().st_size
    row = STAGES.get("finetune").row(summary)
    assert row["note"] == "method lora" and row["accuracy"].endswith("%")
    assert f"({summary['trainable']:,} trained)" in row["params"]


def test_merge_stage_keeps_the_logits_and_stock_modules(lora_run: tuple[Path, dict], tmp_path: Path) -> None:
    run, _ = lora_run
    trained, tokenizer, method = load_adapter_dir(run)
    assert method == "lora"
    summary = run_stage_to("merge", MergeConfig(), tmp_path / "merged", adapter=run)
    assert summary["method"] == "lora" and summary["max_abs_diff"] <= 1e-4
    loaded, _ = load_model(tmp_path / "merged")
    assert only_stock_modules(loaded) == []
    batch = encode(tokenizer)
    torch.testing.assert_close(logits(loaded, batch), logits(trained, batch), atol=1e-4, rtol=1e-4)
    base, _ = load_model(json.loads((run / "base.json").read_text())["model"])
    assert set(loaded.state_dict()) == set(base.state_dict())
    assert STAGES.get("merge").row(summary)["note"].startswith("max |Δlogit| ")


def test_merge_with_a_moved_base(lora_run: tuple[Path, dict], inputs: dict, tmp_path: Path) -> None:
    run, _ = lora_run
    moved = Path(shutil.copytree(inputs["base"], tmp_path / "moved"))
    assert run_stage_to("merge", MergeConfig(base=str(moved)), tmp_path / "a", adapter=run)["max_abs_diff"] <= 1e-4
    other = save_tiny_checkpoint(tmp_path / "other", seed=1)
    with pytest.raises(MergeError) as info:
        run_stage_to("merge", MergeConfig(base=str(other)), tmp_path / "b", adapter=run)
    assert str(info.value) == (
        f"the base checkpoint `{other}` is not the one `{run}` was trained on (its weights differ); "
        "pass --base with the original checkpoint"
    )
    assert not (tmp_path / "b").exists()


def test_merge_of_a_directory_that_is_not_a_finetune(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(MergeError, match=f"`{tmp_path / 'run'}` has no adapter.safetensors; pass the --out"):
        run_stage_to("merge", MergeConfig(), tmp_path / "merged", adapter=tmp_path / "run")
    assert not (tmp_path / "merged").exists()


def test_single_class_data_leaves_no_output(inputs: dict[str, Path], tmp_path: Path) -> None:
    one = tmp_path / "one.tsv"
    one.write_text("sentence\tlabel\ngood\t1\ngreat\t1\n")
    config = FinetuneConfig(method="full", options=FullConfig(), train=FAST)
    with pytest.raises(DataError, match="single class"):
        run_stage_to("finetune", config, tmp_path / "run", model=inputs["base"], train=one)
    assert not (tmp_path / "run").exists()


def test_interrupted_finetune_resumes_from_its_checkpoint(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import compressor.methods.base
    import compressor.train.loop

    calls = []

    def interrupted(*args: object, **kwargs: object) -> None:  # training finished, Ctrl-C while saving
        calls.append(1)
        raise KeyboardInterrupt

    config = FinetuneConfig(method="full", options=FullConfig(), train=FAST)
    out = tmp_path / "run"
    real_state = compressor.methods.base.adapter_state
    monkeypatch.setattr(compressor.methods.base, "adapter_state", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_stage_to("finetune", config, out, model=inputs["base"], train=inputs["train"])
    assert not out.exists() and calls == [1]
    checkpoints = tmp_path / ".run.partial" / "checkpoints"
    assert (checkpoints / "checkpoint-6" / "trainer_state.json").is_file()  # the final step was saved

    monkeypatch.setattr(compressor.methods.base, "adapter_state", real_state)
    found = []
    real_last = compressor.train.loop._last_checkpoint
    monkeypatch.setattr(compressor.train.loop, "_last_checkpoint", lambda d: found.append(real_last(d)) or found[-1])
    summary = run_stage_to("finetune", config, out, model=inputs["base"], train=inputs["train"], resume=True)
    assert [p.name for p in found] == ["checkpoint-6"]  # continued from the last checkpoint, not from zero
    assert summary["metrics"]["steps"] >= 6  # (transformers may take one more step after resuming at the end)
    assert not (tmp_path / ".run.partial").exists()
    assert (out / ADAPTER_NAME).is_file()
