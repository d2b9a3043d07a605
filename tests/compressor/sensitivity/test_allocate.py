from __future__ import annotations

import pytest
import torch

from compressor.arch.parts import count_parameters
from compressor.errors import ConfigError, PruneError
from compressor.prune.units import apply_plan_
from compressor.sensitivity.allocate import allocate, kept_layers
from compressor.sensitivity.config import AnalyseConfig, Budget, parse_budget
from compressor.sensitivity.cost import encoder_flops
from compressor.sensitivity.latency import LatencyTable
from compressor.sensitivity.scorers import Scores, run_scorer
from tests.models import tiny_model


def _random_scores(model, seed: int = 0, *, joint: bool = True) -> Scores:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    layers = model.config.num_hidden_layers
    return Scores(
        "test",
        [torch.rand(4, generator=g) for _ in range(layers)],
        [torch.rand(37, generator=g) for _ in range(layers)],
        {},
        joint_scale=joint,
    )


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.6, 0.8, 1.0])
@pytest.mark.parametrize("metric", ["params", "flops"])
def test_plan_meets_params_and_flops_budgets_within_one_percent(metric: str, fraction: float) -> None:
    model = tiny_model(num_hidden_layers=3)
    plan = allocate(model, _random_scores(model), Budget(metric, fraction), seq_len=64)
    achieved = plan.predicted[metric]["fraction"]
    assert fraction - 0.01 <= achieved <= fraction + 1e-9
    before_params, before_flops = count_parameters(model, encoder_only=True), encoder_flops(model, 64)
    apply_plan_(model, plan)
    assert count_parameters(model, encoder_only=True) == plan.predicted["params"]["after"]
    assert plan.predicted["params"]["before"] == before_params
    assert encoder_flops(model, 64) == plan.predicted["flops"]["after"]
    assert plan.predicted["flops"]["before"] == before_flops


@pytest.mark.parametrize(("min_heads", "min_neurons"), [(1, 1), (2, 5), (0, 0)])
def test_per_layer_minimum_is_respected(min_heads: int, min_neurons: int) -> None:
    model = tiny_model(num_hidden_layers=3)
    scores = _random_scores(model)
    scores.heads[1] = torch.zeros(4)  # a layer whose heads look useless
    plan = allocate(model, scores, Budget("params", 0.45), min_heads=min_heads, min_neurons=min_neurons)
    assert all(len(e.heads) >= min_heads and len(e.neurons) >= min_neurons for e in plan.layers)
    if min_heads == 0:
        assert plan.layers[1].heads == []  # 0 allowed: a layer with no heads
        apply_plan_(model, plan)
        assert type(model.bert.encoder.layer[1].attention).__name__ == "HeadlessAttention"


def test_allocation_is_deterministic() -> None:
    model = tiny_model(num_hidden_layers=3)
    tied = Scores("test", [torch.ones(4)] * 3, [torch.ones(37)] * 3, {}, joint_scale=True)  # ties everywhere
    for scores in (_random_scores(model), tied):
        first = allocate(model, scores, Budget("flops", 0.5)).to_dict()
        assert allocate(model, scores, Budget("flops", 0.5)).to_dict() == first


def test_scoring_then_allocating_is_deterministic(batches) -> None:  # noqa: ANN001
    config = AnalyseConfig(samples=24, batch_size=8)
    plans = [
        allocate(tiny_model(), run_scorer("head-gradient", tiny_model(), batches, config), Budget("params", 0.5))
        for _ in range(2)
    ]
    assert plans[0].to_dict() == plans[1].to_dict()


def test_higher_scores_are_kept() -> None:
    model = tiny_model()
    scores = Scores(
        "test",
        [torch.tensor([1.0, 4.0, 3.0, 2.0]), torch.tensor([9.0, 8.0, 7.0, 6.0])],
        [torch.arange(37.0), torch.arange(37.0)],
        {},
        joint_scale=True,
    )
    plan = allocate(model, scores, Budget("params", 0.7))
    for entry, h in zip(plan.layers, scores.heads, strict=True):
        kept = set(entry.heads)
        assert all(h[i] >= h[j] for i in kept for j in set(range(4)) - kept)
        assert entry.neurons == list(range(37 - len(entry.neurons), 37))  # the top neurons


def test_unbalanced_kinds_are_balanced_before_mixing() -> None:
    """Per-layer normalised scores: heads ~0.5, neurons ~0.16 but a head costs 16× a neuron; both kinds survive."""
    model = tiny_model()
    scores = _random_scores(model, joint=False)
    scores.heads = [h / h.norm() for h in scores.heads]
    scores.neurons = [n / n.norm() for n in scores.neurons]
    plan = allocate(model, scores, Budget("params", 0.5), min_heads=0, min_neurons=0)
    heads = sum(len(e.heads) for e in plan.layers)
    neurons = sum(len(e.neurons) for e in plan.layers)
    assert 0 < heads < 8 and 0 < neurons < 74


def test_layer_drop_removes_the_layer_with_least_value() -> None:
    model = tiny_model(num_hidden_layers=3)
    scores = _random_scores(model)
    scores.heads[1] = torch.full((4,), 1e-6)
    scores.neurons[1] = torch.full((37,), 1e-6)
    kept = allocate(model, scores, Budget("params", 0.5))
    assert not kept.dropped_layers and all(len(e.heads) >= 1 for e in kept.layers)
    plan = allocate(model, scores, Budget("params", 0.5), allow_layer_drop=True)
    assert plan.dropped_layers == [1] and plan.layers[1].heads == [] and plan.layers[1].neurons == []
    assert plan.predicted["params"]["fraction"] <= 0.5
    apply_plan_(model, plan)
    assert len(model.bert.encoder.layer) == 2
    assert [e["source"] for e in model.config.compressor_structure["layers"]] == [0, 2]


def test_latency_budget_uses_the_cost_table() -> None:
    model = tiny_model()
    table = LatencyTable(
        base_ms=1.0, per_layer_ms=0.1, per_head_ms=0.2, per_neuron_ms=0.01, seq_len=64, threads=1, key={}
    )
    full = 1.0 + 2 * (0.1 + 4 * 0.2 + 37 * 0.01)
    plan = allocate(model, _random_scores(model), parse_budget("latency-ms=2.5"), seq_len=64, latency=table)
    latency = plan.predicted["latency_ms"]
    assert latency["before"] == pytest.approx(full)
    assert 2.5 - 0.01 - 1e-9 <= latency["after"] <= 2.5 + 1e-9
    assert plan.budget["threads"] == 1
    with pytest.raises(ConfigError, match="latency table"):
        allocate(model, _random_scores(model), parse_budget("latency-ms=2.5"))


def test_infeasible_budget_and_mismatched_scores_are_errors() -> None:
    model = tiny_model()
    with pytest.raises(ConfigError, match="below what the per-layer minimum keeps") as err:
        allocate(model, _random_scores(model), Budget("params", 0.05), min_heads=2)
    assert "\n" not in str(err.value)
    with pytest.raises(PruneError, match="do not match"):
        allocate(tiny_model(num_hidden_layers=3), _random_scores(model), Budget("params", 0.5))


@pytest.mark.parametrize(
    ("count", "keep", "expected"),
    [(6, 3, [0, 2, 5]), (12, 6, [0, 2, 4, 7, 9, 11]), (6, 6, [0, 1, 2, 3, 4, 5]), (6, 2, [0, 5]), (6, 1, [5])],
)
def test_spread_keeps_the_first_and_the_last_layer_evenly_between(count: int, keep: int, expected: list) -> None:
    assert kept_layers("spread", count, keep) == expected


def test_layer_choice_fixes_which_layers_the_plan_keeps() -> None:
    """The scores would drop layer 1 first; `spread` and listed indices keep the layers they name all the same,
    and the budget still holds."""
    model = tiny_model(num_hidden_layers=4)
    scores = _random_scores(model)
    scores.heads[1], scores.neurons[1] = torch.full((4,), 1e-6), torch.full((37,), 1e-6)
    by_score = allocate(model, scores, Budget("params", 0.5), keep_layers=3)
    assert by_score.dropped_layers == [1]
    for choice, kept in (("spread", [0, 2, 3]), ("1,2,3", [1, 2, 3])):  # spread of 3 in 4: 0, 1.5 → 2, 3
        plan = allocate(model, scores, Budget("params", 0.5), keep_layers=3, layer_choice=choice)
        assert [i for i in range(4) if i not in plan.dropped_layers] == kept
        assert plan.predicted["params"]["fraction"] <= 0.5
    listed = allocate(model, scores, Budget("params", 0.5), layer_choice="0,1")  # no keep_layers: the list's count
    assert listed.dropped_layers == [2, 3]
    apply_plan_(model, listed)
    assert [e["source"] for e in model.config.compressor_structure["layers"]] == [0, 1]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"layer_choice": "evenly"}, "must be score, spread or layer indices such as 0,2,4; got 'evenly'"),
        ({"layer_choice": "0,-1"}, "must be score, spread or layer indices"),
        ({"layer_choice": "1,1"}, "names a layer twice"),
        ({"layer_choice": 3}, "must be score, spread or layer indices"),
        ({"layer_choice": "spread"}, "spread needs `keep_layers` or `depth`"),
        ({"layer_choice": "0,2", "keep_layers": 3}, "names 2 layers but `keep_layers` is 3"),
    ],
)
def test_bad_layer_choice_is_a_one_line_error(fields: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        AnalyseConfig(**fields)
    assert "\n" not in str(err.value)


def test_layer_choice_is_checked_against_the_model() -> None:
    model = tiny_model(num_hidden_layers=3)
    with pytest.raises(ConfigError, match="names layer 3 but the model has 3 layers"):
        allocate(model, _random_scores(model), Budget("params", 0.5), layer_choice="0,3")
    with pytest.raises(ConfigError, match="names 2 layers but the plan keeps 1"):
        allocate(model, _random_scores(model), Budget("params", 0.5), layer_choice="0,2", keep_layers=1)
    assert AnalyseConfig(layer_choice=" 4, 0,2", depth=0.5).layer_choice == "0,2,4"  # normalised
