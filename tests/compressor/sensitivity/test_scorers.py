from __future__ import annotations

import math

import pytest
import torch

from compressor.arch.surgery import prune_ffn_, prune_heads_
from compressor.errors import DataError
from compressor.sensitivity.config import AnalyseConfig
from compressor.sensitivity.masks import UnitMasks, batch_loss
from compressor.sensitivity.scorers import SCORERS, head_importance, run_scorer
from tests.models import tiny_model

CONFIG = AnalyseConfig(samples=24, batch_size=8)


def _pruned_model() -> torch.nn.Module:
    """Three layers: 2 heads + 10 neurons, no heads + full FFN, full heads + no FFN."""
    model = tiny_model(seed=1, num_hidden_layers=3)
    prune_heads_(model, 0, [1, 3])
    prune_ffn_(model, 0, list(range(0, 37, 4))[:10])
    prune_heads_(model, 1, [])
    prune_ffn_(model, 2, [])
    return model


@pytest.mark.parametrize("name", SCORERS.names())
def test_every_scorer_gives_the_right_shapes(name: str, batches) -> None:  # noqa: ANN001
    model = tiny_model()
    scores = run_scorer(name, model, batches[:1], CONFIG)  # shapes only: one batch is enough
    assert [tuple(h.shape) for h in scores.heads] == [(4,), (4,)]
    assert [tuple(n.shape) for n in scores.neurons] == [(37,), (37,)]
    assert len(scores.tensors) == 2 * 6 and all(k.endswith(".weight") for k in scores.tensors)
    assert all(torch.isfinite(h).all() for h in scores.heads + scores.neurons)
    assert scores.head_matrix().shape == (2, 4)


@pytest.mark.parametrize("name", SCORERS.names())
def test_every_scorer_handles_pruned_models(name: str, batches) -> None:  # noqa: ANN001
    model = _pruned_model()
    scores = run_scorer(name, model, batches[:1], CONFIG)
    assert [len(h) for h in scores.heads] == [2, 0, 4]
    assert [len(n) for n in scores.neurons] == [10, 37, 0]
    assert len(scores.tensors) == 6 + 2 + 4  # layer 1 has no q/k/v/o, layer 2 no FFN linears
    matrix = scores.head_matrix(4)
    assert torch.isnan(matrix[0, 2:]).all() and torch.isnan(matrix[1]).all() and not torch.isnan(matrix[2]).any()


def test_the_scorer_list_is_covered() -> None:
    assert len(SCORERS.names()) == 5  # the parametrisations above are not empty


@pytest.mark.parametrize("name", ["head-gradient", "taylor"])
def test_a_head_with_zeroed_output_is_least_important(name: str, batches) -> None:  # noqa: ANN001
    model = tiny_model(seed=3)
    d = 8  # head size of the tiny model
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.output.dense.weight[:, 2 * d : 3 * d] = 0  # head 2 of layer 0
        model.bert.encoder.layer[1].attention.output.dense.weight[:, 0:d] = 0  # head 0 of layer 1
        model.bert.encoder.layer[1].output.dense.weight[:, 5] = 0  # FFN neuron 5 of layer 1
    scores = run_scorer(name, model, batches, CONFIG)
    assert int(scores.heads[0].argmin()) == 2 and int(scores.heads[1].argmin()) == 0
    assert float(scores.heads[0][2]) == pytest.approx(0.0, abs=1e-12)
    assert float(scores.heads[0].sort().values[1]) > 0  # the others do matter
    assert int(scores.neurons[1].argmin()) == 5
    flat = torch.cat(scores.heads)
    assert set(flat.argsort()[:2].tolist()) == {2, 4}  # globally the two least important heads


def test_head_importance_is_per_layer_normalised_and_padded(batches) -> None:  # noqa: ANN001
    importance = head_importance(tiny_model(), batches)
    assert importance.shape == (2, 4)
    torch.testing.assert_close(importance.norm(dim=1), torch.ones(2, dtype=importance.dtype))
    pruned = head_importance(_pruned_model(), batches)
    assert pruned.shape == (3, 4) and torch.isnan(pruned[0, 2:]).all() and torch.isnan(pruned[1]).all()
    assert not torch.isnan(pruned[2]).any()


def test_masks_equal_removing_the_units(batches) -> None:  # noqa: ANN001
    """Zeroing a head's / neuron's mask must equal cutting it out: the hooks hit the right slices."""
    model = _pruned_model()
    batch = batches[0]
    reference = _pruned_model()
    prune_heads_(reference, 0, [0])  # drop current head 1 of layer 0
    prune_heads_(reference, 2, [0, 1, 3])  # drop current head 2 of layer 2
    prune_ffn_(reference, 1, [i for i in range(37) if i not in (4, 30)])
    with torch.no_grad():
        expected = batch_loss(reference, batch)
        with UnitMasks(model) as masks:
            masks.reset(len(batch["labels"]), requires_grad=False)
            masks.layers[0].heads[:, 1] = 0
            masks.layers[2].heads[:, 2] = 0
            masks.layers[1].neurons[:, [4, 30]] = 0
            masked = batch_loss(model, batch)
        after = batch_loss(model, batch)  # hooks are gone after the context
        plain = batch_loss(_pruned_model(), batch)
    torch.testing.assert_close(masked, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, plain)
    assert not math.isclose(float(masked), float(plain), rel_tol=1e-6)


def test_scorers_leave_the_model_unchanged(batches) -> None:  # noqa: ANN001
    model = tiny_model()
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("taylor", "tensor-loss"):
        run_scorer(name, model, batches, CONFIG)
    assert model.training and not any(p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=0, rtol=0)


def test_data_scorers_need_data() -> None:
    with pytest.raises(DataError, match="needs labelled examples"):
        run_scorer("fisher", tiny_model(), None, CONFIG)
    assert len(run_scorer("magnitude", tiny_model(), None, CONFIG).heads) == 2


def _plant(model: torch.nn.Module) -> torch.nn.Module:
    """Layer 0: head 1 removed in effect (every weight and bias of its q/k/v rows and output columns zeroed), head 3
    made critical (its output columns ×10); layer 1: FFN neuron 7 zeroed (in row, bias, out column), neuron 20
    made critical (always active: its bias +3, so GELU passes it on every token; its out column ×10)."""
    d = 8  # head size of the tiny model
    layers = model.bert.encoder.layer
    attention = layers[0].attention
    with torch.no_grad():
        for linear in (attention.self.query, attention.self.key, attention.self.value):
            linear.weight[d : 2 * d] = 0
            linear.bias[d : 2 * d] = 0
        attention.output.dense.weight[:, d : 2 * d] = 0
        attention.output.dense.weight[:, 3 * d : 4 * d] *= 10
        layers[1].intermediate.dense.weight[7] = 0
        layers[1].intermediate.dense.bias[7] = 0
        layers[1].output.dense.weight[:, 7] = 0
        layers[1].intermediate.dense.bias[20] = 3.0
        layers[1].output.dense.weight[:, 20] *= 10
    return model


@pytest.mark.parametrize("name", SCORERS.names())
@pytest.mark.parametrize("seed", [0, 5])
def test_every_scorer_ranks_a_planted_useless_unit_last_and_a_critical_one_first(
    name: str,
    seed: int,
    batches,  # noqa: ANN001
) -> None:
    scores = run_scorer(name, _plant(tiny_model(seed=seed)), batches, CONFIG)
    heads, neurons = scores.heads[0], scores.neurons[1]
    assert int(heads.argmin()) == 1 and float(heads[1]) == pytest.approx(0.0, abs=1e-9)
    if name == "tensor-loss":  # a known limit of the per-tensor proxy, kept visible (docs/sensitivity.md)
        assert int(heads.argmax()) != 3, "tensor-loss now ranks the planted head first: drop this branch"
    else:
        assert int(heads.argmax()) == 3, heads
    assert int(neurons.argmin()) == 7 and float(neurons[7]) == pytest.approx(0.0, abs=1e-9)
    assert int(neurons.argmax()) == 20, neurons.topk(3)
