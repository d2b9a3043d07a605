"""The fine-tuning verbs: `finetune(model, config, …)` finds the method from the config's `kind`; `merge(model)`
folds every method's adapters and leaves stock modules only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from compressor.checkpoint import load_model
from compressor.data import load_data
from compressor.errors import ConfigError, DataError, MergeError
from compressor.methods.api import finetune, merge, method_of
from compressor.methods.base import METHODS, only_stock_modules, trainable_parameters
from compressor.methods.lora import LoraConfig
from compressor.train.config import TrainConfig
from tests.models import encode, save_tiny_checkpoint, tiny_model, tiny_tokenizer, write_tiny_data

FAST = TrainConfig(epochs=1, max_steps=6, batch_size=8, save_steps=3, logging_steps=2, lr=1e-3)


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    return save_tiny_checkpoint(tmp_path / "base")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("data") / "train.tsv", 40)


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("method", METHODS.names())
def test_finetune_then_merge_keeps_logits(method: str, base: Path, train_file: Path, tmp_path: Path) -> None:
    data = load_data(train_file)
    model, tokenizer = load_model(base)
    config = METHODS.get(method).config_cls()
    result = finetune(
        model,
        config,
        tokenizer=tokenizer,
        data=data,
        eval_data=data,
        train=FAST,
        work_dir=tmp_path / "work",
        quiet=True,
    )
    assert result.method is METHODS.get(method)
    assert 0 <= result.metrics["eval_accuracy"] <= 1
    assert result.metrics["steps"] == 6 and result.metrics["train_examples"] == 40
    assert (result.trainable, result.total) == (result.metrics["trainable_parameters"], count(tiny_model()))
    batch = encode(tokenizer)
    trained = logits(result.model, batch)
    merged = merge(result.model)
    assert only_stock_modules(merged) == []
    torch.testing.assert_close(logits(merged, batch), trained, atol=1e-4, rtol=1e-4)
    assert set(merged.state_dict()) == set(tiny_model().state_dict())
    if method == "lora":
        assert result.trainable < result.total * 0.5
        assert result.metrics["learning_rate"] == FAST.lr


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_method_is_found_from_the_config_kind() -> None:
    assert method_of(LoraConfig(rank=2)) is METHODS.get("lora")

    @dataclass
    class QloraConfig:
        kind: ClassVar[str] = "qlora"

    with pytest.raises(ConfigError, match="unknown method `qlora`; known: adamix, dsee, full, hiwi, lora"):
        method_of(QloraConfig())


def test_merge_folds_the_adapters_of_any_method(tmp_path: Path) -> None:
    """One `merge` for every method: the injected model (perturbed, so that the adapters matter) folds exactly."""
    batch = encode(tiny_tokenizer(tmp_path / "tok"))
    for name, config in (("lora", LoraConfig(rank=2)), ("dsee", METHODS.get("dsee").config_cls(rank=2))):
        model = METHODS.get(name).inject(tiny_model(), config)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in trainable_parameters(model).values():
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
        trained = logits(model, batch)
        assert not torch.allclose(trained, logits(tiny_model(), batch), atol=1e-3)
        merged = merge(model)
        assert only_stock_modules(merged) == [], name
        torch.testing.assert_close(logits(merged, batch), trained, atol=1e-4, rtol=1e-4)
    plain = tiny_model()
    assert merge(plain) is plain  # nothing to fold: the same model back


def test_merge_refuses_to_leave_foreign_modules() -> None:
    class Custom(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    model = tiny_model()
    model.bert.pooler.activation = Custom()
    with pytest.raises(MergeError, match=r"merging left modules that are not stock ones: bert\.pooler\.activation"):
        merge(model)


def test_lora_trains_only_adapters_and_head(base: Path) -> None:
    model, _ = load_model(base)
    model = METHODS.get("lora").inject(model, LoraConfig(rank=2))
    names = trainable_parameters(model)
    assert names and all("lora_" in n or "classifier" in n for n in names)


def test_lora_config_rejects_bad_rank() -> None:
    with pytest.raises(ConfigError, match="`rank` must be a positive integer, got 0"):
        LoraConfig(rank=0)


def test_single_class_data_is_refused(base: Path, tmp_path: Path) -> None:
    one = tmp_path / "one.tsv"
    one.write_text("sentence\tlabel\ngood\t1\ngreat\t1\n")
    model, tokenizer = load_model(base)
    with pytest.raises(DataError, match="single class"):
        finetune(
            model,
            METHODS.get("full").config_cls(),
            tokenizer=tokenizer,
            data=load_data(one),
            train=FAST,
            work_dir=tmp_path / "work",
        )
    assert not (tmp_path / "work").exists()  # refused before training started


# every method with its defaults, plus the other forms of a method (their options)
RUN_CASES = {name: (name, {}) for name in METHODS.names()} | {"adamix-adapter": ("adamix", {"experts": "adapter"})}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_every_method_through_run_directories_merges_to_the_trained_logits(
    case: str, base: Path, train_file: Path, tmp_path: Path
) -> None:
    """finetune writes a run directory; merge reads it back from disk (a fresh base + the saved adapter) and its
    checkpoint gives the logits of the model as trained, loaded from the run directory."""
    from compressor.stages.finetune import FinetuneConfig, load_adapter_dir
    from compressor.stages.merge import MergeConfig
    from tests.models import run_stage_to

    method, options = RUN_CASES[case]
    config = FinetuneConfig(method=method, options=METHODS.get(method).config_cls(**options), train=FAST)
    summary = run_stage_to("finetune", config, tmp_path / "run", model=base, train=train_file)
    assert summary["method"] == method
    trained, tokenizer, found = load_adapter_dir(tmp_path / "run")
    assert found == method
    merged = run_stage_to("merge", MergeConfig(), tmp_path / "merged", adapter=tmp_path / "run")
    assert merged["max_abs_diff"] <= 1e-4
    loaded, _ = load_model(tmp_path / "merged")
    assert only_stock_modules(loaded) == []
    batch = encode(tokenizer)
    torch.testing.assert_close(logits(loaded, batch), logits(trained, batch), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits(loaded, batch), logits(load_model(base)[0], batch), atol=1e-6)  # it trained
