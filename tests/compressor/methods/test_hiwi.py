from __future__ import annotations

import pytest
import torch

from compressor.errors import ConfigError, MergeError, ModelError
from compressor.methods.base import (
    METHODS,
    adapter_state,
    count_trainable,
    load_adapter_state_,
    only_stock_modules,
    trainable_parameters,
)
from compressor.methods.hiwi import HiwiConfig, HiwiLayerNorm, HiwiLinear, delta_state, stored_delta
from tests.models import encode, tiny_model, tiny_tokenizer

HIWI = METHODS.get("hiwi")
LABELS = torch.tensor([1] * 5 + [0] * 5)
HIDDEN, FFN, LAYERS = 32, 37, 2  # tests/models.py tiny BERT


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    return encode(tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def adapter_size(width: int, r: int) -> int:
    return (width * r + r) + (r * width + width)  # down (weight, bias) + up (weight, bias)


def perturb_(model: torch.nn.Module, scale: float = 0.3) -> None:
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def changed_tensors(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


BIASES = ["in_bias", "out_bias"]  # the FFN biases alone


def test_trainable_set_and_count() -> None:
    model = HIWI.inject(tiny_model(0), HiwiConfig(bottleneck=4))  # default: FFN biases and the FFN's LayerNorm
    names = trainable_parameters(model)
    assert all(".hiwi_" in n or n.startswith("classifier.") for n in names)
    head = HIDDEN * 2 + 2
    assert count_trainable(model) == LAYERS * (adapter_size(FFN, 4) + 3 * adapter_size(HIDDEN, 4)) + head
    wrapped = {n for n, m in model.named_modules() if isinstance(m, HiwiLinear)}
    assert wrapped == {f"bert.encoder.layer.{i}.{p}" for p in ("intermediate.dense", "output.dense") for i in (0, 1)}
    norms = {n for n, m in model.named_modules() if isinstance(m, HiwiLayerNorm)}
    assert norms == {f"bert.encoder.layer.{i}.output.LayerNorm" for i in (0, 1)}
    biases_only = HIWI.inject(tiny_model(0), HiwiConfig(bottleneck=4, targets=BIASES))
    assert count_trainable(biases_only) == LAYERS * (adapter_size(FFN, 4) + adapter_size(HIDDEN, 4)) + head


def test_zero_initialised_up_projection_leaves_logits_unchanged(batch: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        reference = tiny_model(0)(**batch).logits
    model = HIWI.inject(tiny_model(0), HiwiConfig())
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, reference)
    model.train()
    model(**batch, labels=LABELS).loss.backward()
    ups = [p.grad for n, p in model.named_parameters() if ".hiwi_" in n and ".up." in n]
    downs = [p.grad for n, p in model.named_parameters() if ".hiwi_" in n and ".down." in n]
    assert all(g is not None for g in ups) and any(g.abs().sum() > 0 for g in ups)  # step 0 already learns
    assert all(g is None or g.abs().sum() == 0 for g in downs)  # nothing flows through a zero up-projection


def test_merged_model_equals_trained_and_changes_only_the_targets(batch: dict[str, torch.Tensor]) -> None:
    original = tiny_model(0).state_dict()
    model = HIWI.inject(tiny_model(0), HiwiConfig(bottleneck=4, targets=BIASES))
    perturb_(model)
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits
        delta = delta_state(model)
        merged = HIWI.merge_(model)
        after = merged(**batch).logits
    assert only_stock_modules(merged) == []
    torch.testing.assert_close(after, trained, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(after, tiny_model(0)(**batch).logits, atol=1e-3)
    state = merged.state_dict()
    assert set(state) == set(original)
    ffn_biases = {f"bert.encoder.layer.{i}.{p}.bias" for i in (0, 1) for p in ("intermediate.dense", "output.dense")}
    assert changed_tensors(original, state) == ffn_biases | {"classifier.weight", "classifier.bias"}
    assert set(delta) == changed_tensors(original, state)  # the stored delta is exactly what changed
    for name, tensor in delta.items():
        torch.testing.assert_close(state[name], tensor)


def test_stored_delta_is_a_tiny_fraction() -> None:
    model = HIWI.inject(tiny_model(0), HiwiConfig(targets=BIASES))
    total = sum(p.numel() for p in tiny_model(0).parameters())
    report = stored_delta(model)
    assert report.params == LAYERS * (FFN + HIDDEN) + HIDDEN * 2 + 2
    assert report.model_params == total
    assert report.fraction == pytest.approx(report.params / total)


def test_weight_targets_feed_each_row(batch: dict[str, torch.Tensor]) -> None:
    original = tiny_model(0).state_dict()
    model = HIWI.inject(tiny_model(0), HiwiConfig(bottleneck=3, targets=["in_weight", "out_weight"]))
    ffn_in = model.bert.encoder.layer[0].intermediate.dense
    ffn_out = model.bert.encoder.layer[0].output.dense
    assert ffn_in.hiwi_bias is None and ffn_in.hiwi_weight.down.in_features == HIDDEN  # rows of W_in (FFN, HIDDEN)
    assert ffn_out.hiwi_weight.down.in_features == FFN  # rows of W_out (HIDDEN, FFN)
    assert count_trainable(model) == LAYERS * (adapter_size(HIDDEN, 3) + adapter_size(FFN, 3)) + HIDDEN * 2 + 2
    perturb_(model, 0.1)
    with torch.no_grad():
        trained = model.eval()(**batch).logits
        merged = HIWI.merge_(model)
        torch.testing.assert_close(merged(**batch).logits, trained, atol=1e-4, rtol=1e-4)
    ffn = ("intermediate.dense", "output.dense")
    ffn_weights = {f"bert.encoder.layer.{i}.{p}.weight" for i in (0, 1) for p in ffn}
    assert changed_tensors(original, merged.state_dict()) == ffn_weights | {"classifier.weight", "classifier.bias"}


def test_inject_is_seeded_and_leaves_the_global_rng_alone() -> None:
    model = tiny_model(0)  # (seeds the global RNG itself)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a = adapter_state(HIWI.inject(model, HiwiConfig(seed=1)), HIWI)
    assert torch.equal(torch.rand(3), expected)
    b = adapter_state(HIWI.inject(tiny_model(0), HiwiConfig(seed=1)), HIWI)
    c = adapter_state(HIWI.inject(tiny_model(0), HiwiConfig(seed=2)), HIWI)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_restore_from_adapter_state_reproduces_logits(batch: dict[str, torch.Tensor]) -> None:
    cfg = HiwiConfig(bottleneck=4, targets=["in_bias", "out_weight"])
    trained = HIWI.inject(tiny_model(0), cfg)
    perturb_(trained, 0.1)
    restored = HIWI.inject(tiny_model(0), cfg)
    load_adapter_state_(restored, adapter_state(trained, HIWI))
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(**batch).logits, trained.eval()(**batch).logits)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"bottleneck": 0}, "bottleneck"),
        ({"activation": "swish"}, "activation"),
        ({"targets": ["in_bias", "in_bias"]}, "targets"),
        ({"targets": ["query"]}, "targets"),
    ],
)
def test_config_rejects_bad_values(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        HiwiConfig(**values)


def test_norm_targets_adapt_the_ffn_layernorm(batch: dict[str, torch.Tensor]) -> None:
    original = tiny_model(0).state_dict()
    with torch.no_grad():
        reference = tiny_model(0)(**batch).logits
    cfg = HiwiConfig(bottleneck=3, targets=["in_bias", "out_bias", "norm_weight", "norm_bias"])
    model = HIWI.inject(tiny_model(0), cfg)
    norm = model.bert.encoder.layer[1].output.LayerNorm
    assert isinstance(norm, HiwiLayerNorm) and norm.hiwi_weight.down.in_features == HIDDEN
    assert count_trainable(model) == LAYERS * (adapter_size(FFN, 3) + 3 * adapter_size(HIDDEN, 3)) + HIDDEN * 2 + 2
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, reference)  # zero up-projections: P' = P at step 0
    perturb_(model, 0.1)
    with torch.no_grad():
        trained = model(**batch).logits
        assert not torch.allclose(trained, reference, atol=1e-3)
        delta = delta_state(model)
        report = stored_delta(model)
        merged = HIWI.merge_(model)
        torch.testing.assert_close(merged(**batch).logits, trained, atol=1e-4, rtol=1e-4)
    assert only_stock_modules(merged) == []
    assert type(merged.bert.encoder.layer[1].output.LayerNorm) is torch.nn.LayerNorm
    ffn = ("intermediate.dense.bias", "output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias")
    expected = {f"bert.encoder.layer.{i}.{p}" for i in (0, 1) for p in ffn} | {"classifier.weight", "classifier.bias"}
    assert changed_tensors(original, merged.state_dict()) == expected == set(delta)
    assert report.params == LAYERS * (FFN + 3 * HIDDEN) + HIDDEN * 2 + 2


def test_norm_target_without_affine_parameters_is_a_clear_error() -> None:
    model = tiny_model(0)
    for layer in model.bert.encoder.layer:
        layer.output.LayerNorm = torch.nn.LayerNorm(HIDDEN, elementwise_affine=False)
    with pytest.raises(ModelError, match="weight of `bert.encoder.layer.0.output.LayerNorm`, which has none"):
        HIWI.inject(model, HiwiConfig(targets=["norm_weight"]))


def test_a_run_directory_stores_only_the_delta_and_merges_from_it(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """finetune keeps delta.safetensors (P' and the head under stock names), not the adapter; merge = base + delta;
    inspect reports its bytes as a share of the model's."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from compressor.checkpoint import load_model
    from compressor.inspection import inspect_path
    from compressor.stages.finetune import FinetuneConfig
    from compressor.stages.merge import MergeConfig
    from compressor.train.config import TrainConfig
    from tests.models import run_stage_to, save_tiny_checkpoint, write_tiny_data

    base = save_tiny_checkpoint(tmp_path / "base")
    train = TrainConfig(epochs=1, max_steps=4, batch_size=8, save_steps=4, logging_steps=2, lr=1e-2)
    config = FinetuneConfig(method="hiwi", options=HiwiConfig(targets=BIASES), train=train)
    data = write_tiny_data(tmp_path / "train.tsv", 24)
    summary = run_stage_to("finetune", config, tmp_path / "run", model=base, train=data)
    run = tmp_path / "run"
    assert (run / "delta.safetensors").is_file() and not (run / "adapter.safetensors").exists()
    stored = load_file(str(run / "delta.safetensors"))
    expected = {f"bert.encoder.layer.{i}.output.dense.bias" for i in range(LAYERS)}
    expected |= {f"bert.encoder.layer.{i}.intermediate.dense.bias" for i in range(LAYERS)}
    assert set(stored) == expected | {"classifier.weight", "classifier.bias"}
    metrics = summary["metrics"]
    assert metrics["delta_max_abs_diff"] <= 1e-4
    original = load_model(base)[0].state_dict()
    assert metrics["model_bytes"] == sum(v.numel() * v.element_size() for v in original.values())
    assert metrics["stored_share"] == pytest.approx(
        (run / "delta.safetensors").stat().st_size / metrics["model_bytes"]
    )
    assert any(not torch.equal(stored[k], original[k]) for k in expected)  # the biases trained

    merged = run_stage_to("merge", MergeConfig(), tmp_path / "merged", adapter=run)
    assert merged["method"] == "hiwi" and merged["from_delta"] is True
    model, _ = load_model(tmp_path / "merged")
    state = model.state_dict()
    for name, value in state.items():  # base + delta, nothing else changed
        torch.testing.assert_close(value, stored[name] if name in stored else original[name], atol=0, rtol=0)

    info = inspect_path(run)
    assert info["kind"] == "finetune" and info["method"] == "hiwi" and info["stored_file"] == "delta.safetensors"
    assert (
        info["stored_share"] == pytest.approx(metrics["stored_share"])
        and info["share_basis"] == "merged model tensors"
    )

    # a delta that misses a tensor the training changed is caught before anything is written
    hiwi = METHODS.get("hiwi")
    short = replace(hiwi, delta=lambda m: {k: v for k, v in delta_state(m).items() if "output.dense" not in k})
    monkeypatch.setitem(METHODS._items, "hiwi", short)  # noqa: SLF001 - a registry entry swapped for this test
    with pytest.raises(MergeError, match="misses a changed tensor"):
        run_stage_to("finetune", config, tmp_path / "bad", model=base, train=data)
    assert not (tmp_path / "bad").exists()
