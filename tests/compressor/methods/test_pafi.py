from __future__ import annotations

import pytest
import torch

from compressor.arch.surgery import prune_heads_
from compressor.errors import ConfigError, ModelError
from compressor.methods.base import (
    METHODS,
    adapter_state,
    count_trainable,
    load_adapter_state_,
    only_stock_modules,
    trainable_parameters,
)
from compressor.methods.pafi import PafiConfig, PafiLinear, masked_entries, select_mask, stored_bytes
from compressor.methods.pafi.method import budget
from tests.models import encode, tiny_model, tiny_tokenizer

PAFI = METHODS.get("pafi")


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    return encode(tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def eligible_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every encoder weight matrix (the default eligible set), by parameter name."""
    return {
        n: p
        for n, p in model.named_parameters()
        if ".encoder.layer." in n and n.endswith("weight") and "LayerNorm" not in n
    }


def test_mask_is_exactly_the_k_smallest_magnitudes() -> None:
    model = tiny_model(0)
    masks = select_mask(model, PafiConfig(fraction=0.01))
    weights = eligible_weights(model)
    n = sum(w.numel() for w in weights.values())
    k = budget(n, 0.01)
    assert sum(i.numel() for i in masks.values()) == k == round(0.01 * n)
    assert {f"{name}.weight" for name in masks} == set(weights)  # encoder matrices only: no embeddings, norms, bias
    chosen = torch.cat([weights[f"{name}.weight"].detach().abs().reshape(-1)[idx] for name, idx in masks.items()])
    rest = []
    for name, idx in masks.items():
        keep = torch.ones(weights[f"{name}.weight"].numel(), dtype=torch.bool)
        keep[idx] = False
        rest.append(weights[f"{name}.weight"].detach().abs().reshape(-1)[keep])
    assert chosen.max() <= torch.cat(rest).min()


def test_mask_depends_on_pretrained_weights_only(batch: dict[str, torch.Tensor]) -> None:
    first = select_mask(tiny_model(0), PafiConfig())
    model = tiny_model(0)
    torch.manual_seed(123)  # another global RNG state, and the model has seen data: nothing may change
    with torch.no_grad():
        model(**batch)
    second = select_mask(model, PafiConfig())
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = select_mask(tiny_model(1), PafiConfig())
    assert any(not torch.equal(first[k], other[k]) for k in first)  # other weights, other mask


def test_ties_at_the_threshold_still_give_exactly_k() -> None:
    model = tiny_model(0)
    with torch.no_grad():
        model.bert.encoder.layer[1].intermediate.dense.weight.zero_()  # 1184 equal magnitudes, more than k
    cfg = PafiConfig(fraction=0.05)
    masks = select_mask(model, cfg)
    k = budget(sum(w.numel() for w in eligible_weights(model).values()), 0.05)
    assert sum(i.numel() for i in masks.values()) == k
    assert masks["bert.encoder.layer.1.intermediate.dense"].numel() == k  # the zeros are the smallest
    assert torch.equal(masks["bert.encoder.layer.1.intermediate.dense"], torch.arange(k))  # ties broken by position


def test_trainable_set_is_values_and_classifier() -> None:
    model = PAFI.inject(tiny_model(0), PafiConfig(fraction=0.01))
    k = masked_entries(model)
    assert k == budget(sum(w.numel() for w in eligible_weights(tiny_model(0)).values()), 0.01)
    names = trainable_parameters(model)
    assert all(n.endswith("pafi_values") or n.startswith("classifier.") for n in names)
    assert count_trainable(model) == k + sum(p.numel() for p in model.classifier.parameters())
    state = adapter_state(model, PAFI)
    assert any(n.endswith("pafi_indices") for n in state) and all(
        n.endswith(("pafi_indices", "pafi_values")) or n.startswith("classifier.") for n in state
    )


def test_gradients_reach_only_the_masked_entries(batch: dict[str, torch.Tensor]) -> None:
    original = tiny_model(0)
    model = PAFI.inject(tiny_model(0), PafiConfig(fraction=0.02))
    model.train()
    labels = torch.tensor([1] * 5 + [0] * 5)
    model(**batch, labels=labels).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(n.endswith("pafi_values") or n.startswith("classifier.") for n in grads)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.endswith("pafi_values"))
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.sub_(p.grad)
    masks = {n: m.pafi_indices.long() for n, m in model.named_modules() if isinstance(m, PafiLinear)}
    merged = PAFI.merge_(model).state_dict()
    for name, before in original.state_dict().items():
        changed = torch.nonzero((merged[name] != before).reshape(-1)).squeeze(1)
        if name.startswith("classifier."):
            assert changed.numel() > 0
        elif name.removesuffix(".weight") in masks:
            assert changed.numel() > 0 and set(changed.tolist()) <= set(masks[name.removesuffix(".weight")].tolist())
        else:
            assert changed.numel() == 0, name


def test_merge_writes_the_delta_and_keeps_logits(batch: dict[str, torch.Tensor]) -> None:
    model = PAFI.inject(tiny_model(0), PafiConfig(fraction=0.02))
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.add_(torch.randn_like(p) * 0.2)
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
        merged = PAFI.merge_(model)
        after = merged(**batch).logits
    assert only_stock_modules(merged) == []
    assert not any("pafi_" in n for n in merged.state_dict())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(after, tiny_model(0)(**batch).logits, atol=1e-3)  # the perturbation did matter


def test_restore_from_adapter_state_reproduces_logits(batch: dict[str, torch.Tensor]) -> None:
    cfg = PafiConfig(fraction=0.02)
    trained = PAFI.inject(tiny_model(0), cfg)
    with torch.no_grad():
        for p in trainable_parameters(trained).values():
            p.add_(torch.randn_like(p) * 0.2)
    state = adapter_state(trained, PAFI)
    restored = PAFI.inject(tiny_model(0), cfg)
    load_adapter_state_(restored, state)
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(**batch).logits, trained.eval()(**batch).logits)


def test_stored_bytes_counts_indices_values_and_head() -> None:
    model = PAFI.inject(tiny_model(0), PafiConfig(fraction=0.01))
    k = masked_entries(model)
    head = sum(p.numel() for p in model.classifier.parameters())
    assert stored_bytes(model) == k * 4 + k * 4 + head * 4  # int32 indices, float32 values and head
    assert stored_bytes(model) == sum(t.numel() * t.element_size() for t in adapter_state(model, PAFI).values())


def test_layer_without_heads_is_skipped(batch: dict[str, torch.Tensor]) -> None:
    model = tiny_model(0)
    prune_heads_(model, 0, [])
    model = PAFI.inject(model, PafiConfig(fraction=0.05))
    wrapped = [n for n, m in model.named_modules() if isinstance(m, PafiLinear)]
    assert wrapped and not any(n.startswith("bert.encoder.layer.0.attention.self") for n in wrapped)
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.add_(torch.randn_like(p) * 0.2)
        before = model.eval()(**batch).logits
        torch.testing.assert_close(PAFI.merge_(model)(**batch).logits, before, atol=1e-4, rtol=1e-4)


def test_inject_twice_is_refused() -> None:
    model = PAFI.inject(tiny_model(0), PafiConfig())
    with pytest.raises(ModelError, match="already injected"):
        PAFI.inject(model, PafiConfig())


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"targets": ["embeddings"]}, "targets"),
        ({"targets": []}, "targets"),
    ],
)
def test_config_rejects_bad_values(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        PafiConfig(**values)


def test_default_is_half_a_percent() -> None:
    assert PafiConfig().fraction == 0.005  # the documented default: 0.5 % of the eligible entries
