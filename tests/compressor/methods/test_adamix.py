from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from compressor.errors import ConfigError
from compressor.methods.adamix import AdamixConfig, AdamixLinear, consistency_loss
from compressor.methods.base import (
    METHODS,
    adapter_state,
    count_trainable,
    load_adapter_state_,
    only_stock_modules,
    trainable_parameters,
)
from tests.models import encode, tiny_model, tiny_tokenizer

ADAMIX = METHODS.get("adamix")
LABELS = torch.tensor([1] * 5 + [0] * 5)
HIDDEN, LAYERS = 32, 2


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    return encode(tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def perturb_(model: torch.nn.Module, scale: float = 0.3) -> None:
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def mixtures(model: torch.nn.Module) -> dict[str, AdamixLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AdamixLinear)}


def test_trainable_set_and_count() -> None:
    model = ADAMIX.inject(tiny_model(0), AdamixConfig(num_experts=3, rank=2))
    assert set(mixtures(model)) == {
        f"bert.encoder.layer.{i}.attention.self.{p}" for i in (0, 1) for p in ("query", "value")
    }
    names = trainable_parameters(model)
    assert all(n.endswith(("adamix_A", "adamix_B")) or n.startswith("classifier.") for n in names)
    per_module = 3 * 2 * HIDDEN + HIDDEN * 2  # M down-projections (r, in) + one shared up-projection (out, r)
    assert count_trainable(model) == LAYERS * 2 * per_module + HIDDEN * 2 + 2
    assert ADAMIX.find_unused_parameters


def test_zero_initialised_up_projection_leaves_logits_unchanged(batch: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        reference = tiny_model(0)(**batch).logits
        model = ADAMIX.inject(tiny_model(0), AdamixConfig(dropout=0.0))
        torch.testing.assert_close(model.eval()(**batch).logits, reference)
        torch.testing.assert_close(model.train()(**batch).logits, reference)  # any routed expert: B = 0


def test_routing_is_uniform_seeded_and_per_layer(batch: dict[str, torch.Tensor]) -> None:
    def draws(seed: int) -> list[tuple[int | None, ...]]:
        model = ADAMIX.inject(tiny_model(0), AdamixConfig(num_experts=4, rank=2, seed=seed)).train()
        out = []
        with torch.no_grad():
            for _ in range(30):
                model(**batch)
                out.append(tuple(m.last_expert for m in mixtures(model).values()))
        return out

    first = draws(0)
    assert first == draws(0)  # seeded: the same routing again
    assert first != draws(1)
    flat = [e for step in first for e in step]
    assert set(flat) == {0, 1, 2, 3}  # every expert gets drawn
    assert len(set(first)) > 1 and any(len(set(step)) > 1 for step in first)  # layers draw independently


def test_only_the_routed_expert_gets_gradient(batch: dict[str, torch.Tensor]) -> None:
    model = ADAMIX.inject(tiny_model(0), AdamixConfig(num_experts=4, rank=2, dropout=0.0))
    perturb_(model)
    model.train()
    model(**batch, labels=LABELS).loss.backward()
    for module in mixtures(model).values():
        grad = module.adamix_A.grad  # (M, r, in)
        used = module.last_expert
        assert grad[used].abs().sum() > 0
        assert all(grad[i].abs().sum() == 0 for i in range(4) if i != used)


def test_merge_is_the_average_of_the_expert_updates(batch: dict[str, torch.Tensor]) -> None:
    original = tiny_model(0).state_dict()
    model = ADAMIX.inject(tiny_model(0), AdamixConfig(num_experts=3, rank=2))
    perturb_(model)
    expected = {}
    with torch.no_grad():
        for name, module in mixtures(model).items():
            experts = torch.stack([module.expert_delta(i) for i in range(3)])  # (M, out, in)
            assert not torch.allclose(experts[0], experts[1])  # the experts really differ
            expected[name] = experts.mean(dim=0)
        model.eval()
        averaged = model(**batch).logits
        merged = ADAMIX.merge_(model)
        after = merged(**batch).logits
    assert only_stock_modules(merged) == []
    state = merged.state_dict()
    for name, delta in expected.items():
        torch.testing.assert_close(state[f"{name}.weight"] - original[f"{name}.weight"], delta, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(state[f"{name}.bias"], original[f"{name}.bias"], atol=0, rtol=0)
    torch.testing.assert_close(after, averaged, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(after, tiny_model(0)(**batch).logits, atol=1e-3)


def test_eval_uses_the_averaged_expert_not_a_routed_one(batch: dict[str, torch.Tensor]) -> None:
    model = ADAMIX.inject(tiny_model(0), AdamixConfig(num_experts=2, rank=2, dropout=0.0))
    perturb_(model)
    with torch.no_grad():
        evals = [model.eval()(**batch).logits for _ in range(2)]
        routed = model.train()(**batch).logits
    torch.testing.assert_close(evals[0], evals[1], atol=0, rtol=0)
    assert all(m.last_expert is not None for m in mixtures(model).values())
    assert not torch.allclose(routed, evals[0], atol=1e-4)


def test_consistency_loss_is_symmetric_kl_with_stop_gradient(batch: dict[str, torch.Tensor]) -> None:
    model = ADAMIX.inject(tiny_model(0), AdamixConfig(num_experts=4, rank=2, dropout=0.0, consistency=2.0))
    # the weight travels with every mixture (a wrapper such as DDP's keeps the modules, not model attributes)
    assert [m.consistency for m in mixtures(model).values()] == [2.0] * 4
    assert not hasattr(model, "adamix_consistency")
    perturb_(model)
    model.train()
    inputs = dict(batch) | {"labels": LABELS}
    first = model(**inputs).logits.detach().requires_grad_()  # (batch, labels), a leaf to read its gradient
    router = next(iter(mixtures(model).values())).router
    draws = router.get_state()
    loss = consistency_loss(model, inputs, SimpleNamespace(logits=first))
    assert loss.item() > 0 and loss.requires_grad
    router.set_state(draws)  # replay the second pass's routing
    with torch.no_grad():
        second = model(**batch).logits
    log_p, log_q = F.log_softmax(first.detach(), -1), F.log_softmax(second, -1)

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # KL(a ‖ b), batch mean, from log-probabilities
        return (a.exp() * (a - b)).sum(-1).mean()

    torch.testing.assert_close(loss.detach(), 2.0 * 0.5 * (kl(log_q, log_p) + kl(log_p, log_q)))
    loss.backward()
    # stop-gradient: only KL(sg(q) ‖ p) reaches the first pass, with d/dz = weight · ½ · (p - q) / batch
    expected = 2.0 * 0.5 * (log_p.exp() - log_q.exp()) / first.shape[0]
    torch.testing.assert_close(first.grad, expected)


def test_consistency_loss_off_or_in_eval_skips_the_second_pass(batch: dict[str, torch.Tensor]) -> None:
    calls = []
    for weight, training in ((0.0, True), (1.0, False)):
        model = ADAMIX.inject(tiny_model(0), AdamixConfig(consistency=weight)).train(training)
        model.register_forward_hook(lambda *_: calls.append(1))
        outputs = SimpleNamespace(logits=torch.zeros(2, 2))
        assert consistency_loss(model, dict(batch), outputs).item() == 0
    assert calls == []


def test_restore_from_adapter_state_reproduces_logits(batch: dict[str, torch.Tensor]) -> None:
    cfg = AdamixConfig(num_experts=3, rank=2)
    trained = ADAMIX.inject(tiny_model(0), cfg)
    perturb_(trained)
    restored = ADAMIX.inject(tiny_model(0), cfg)
    load_adapter_state_(restored, adapter_state(trained, ADAMIX))
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(**batch).logits, trained.eval()(**batch).logits)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"num_experts": 0}, "num_experts"),
        ({"experts": 3}, "experts"),
        ({"experts": "prefix"}, "experts"),
        ({"bottleneck": 0}, "bottleneck"),
        ({"activation": "swish"}, "activation"),
        ({"rank": -1}, "rank"),
        ({"alpha": 0}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"consistency": -0.5}, "consistency"),
        ({"targets": ["qkv"]}, "targets"),
    ],
)
def test_config_rejects_bad_values(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        AdamixConfig(**values)
