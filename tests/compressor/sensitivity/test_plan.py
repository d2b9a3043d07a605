from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressor.arch.structure import structure_of
from compressor.arch.surgery import prune_ffn_, prune_heads_
from compressor.checkpoint import load_model, save_model
from compressor.errors import ConfigError, PruneError
from compressor.prune.units import apply_plan_
from compressor.sensitivity.allocate import allocate
from compressor.sensitivity.config import AnalyseConfig, Budget
from compressor.sensitivity.masks import UnitMasks, batch_loss
from compressor.sensitivity.plan import Plan
from compressor.sensitivity.scorers import run_scorer
from tests.models import encode, tiny_model, tiny_tokenizer


def _plan(model, batches, budget: str = "params=0.5", **kwargs) -> Plan:  # noqa: ANN001
    config = AnalyseConfig(samples=24, batch_size=8, budget=budget)
    scores = run_scorer("fisher", model, batches, config)
    return allocate(model, scores, config.parsed_budget, **kwargs)


def test_apply_plan_removes_exactly_the_planned_units(batches) -> None:  # noqa: ANN001
    model = tiny_model(num_hidden_layers=3)
    plan = _plan(model, batches, min_heads=0, min_neurons=0)
    batch = batches[0]
    with torch.no_grad(), UnitMasks(model) as masks:  # the reference: the same units masked to zero
        masks.reset(len(batch["labels"]), requires_grad=False)
        for entry, layer in zip(plan.layers, masks.layers, strict=True):
            layer.heads[:, [h for h in range(4) if h not in entry.heads]] = 0
            layer.neurons[:, [n for n in range(37) if n not in entry.neurons]] = 0
        expected = batch_loss(model, batch)
    apply_plan_(model, plan)
    structure = structure_of(model)
    assert [e["heads"] for e in structure["layers"]] == [e.heads for e in plan.layers]
    assert [e["neurons"] for e in structure["layers"]] == [e.neurons for e in plan.layers]
    with torch.no_grad():
        torch.testing.assert_close(batch_loss(model, batch), expected, atol=1e-4, rtol=1e-5)


def test_plan_indices_are_relative_to_the_current_model(batches) -> None:  # noqa: ANN001
    model = tiny_model(num_hidden_layers=2)
    prune_heads_(model, 0, [1, 2, 3])  # current heads 0, 1, 2 = original 1, 2, 3
    prune_ffn_(model, 1, list(range(10, 30)))
    plan = _plan(model, batches, budget="params=0.6")
    assert plan.model["heads"] == [3, 4] and plan.model["intermediate"] == [37, 20]
    apply_plan_(model, plan)
    structure = structure_of(model)
    assert structure["layers"][0]["heads"] == [[1, 2, 3][i] for i in plan.layers[0].heads]
    assert structure["layers"][1]["neurons"] == [list(range(10, 30))[i] for i in plan.layers[1].neurons]


def test_plan_saves_loads_and_a_pruned_model_round_trips(tmp_path: Path, batches) -> None:  # noqa: ANN001
    model = tiny_model(num_hidden_layers=3)
    plan = _plan(model, batches, budget="flops=0.4", min_heads=0, allow_layer_drop=True)
    path = plan.save(tmp_path / "plan.json")
    loaded_plan = Plan.load(path)
    assert loaded_plan.to_dict() == plan.to_dict()
    apply_plan_(model, loaded_plan)
    tok = tiny_tokenizer(tmp_path / "tok")
    inputs = encode(tok)
    with torch.no_grad():
        expected = model(**inputs).logits
    save_model(model, tok, tmp_path / "pruned")
    reloaded, _ = load_model(tmp_path / "pruned")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected, atol=1e-6, rtol=1e-6)
    assert structure_of(reloaded) == structure_of(model)
    # and the pruned model can be analysed and planned again
    again = _plan(reloaded, batches, budget="params=0.8")
    apply_plan_(reloaded, again)


def test_a_plan_for_another_shape_is_a_one_line_error(batches) -> None:  # noqa: ANN001
    plan = _plan(tiny_model(num_hidden_layers=2), batches)
    with pytest.raises(PruneError, match="the plan is for a model with 2 layers") as err:
        apply_plan_(tiny_model(num_hidden_layers=3), plan)
    assert "\n" not in str(err.value) and "this model has 3 layers" in str(err.value)
    pruned = tiny_model(num_hidden_layers=2)
    prune_heads_(pruned, 0, [0, 1])
    with pytest.raises(PruneError, match=r"heads \[4, 4\].*this model has .*heads \[2, 4\]"):
        apply_plan_(pruned, plan)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(version=99), "newer than this compressor understands"),
        (lambda d: d.update(kind="something"), "not a compressor plan"),
        (lambda d: d["layers"][0].update(heads=[0, 9]), r"layers\[0\].heads` must list distinct indices in \[0, 4\)"),
        (lambda d: d["layers"][1].update(neurons=[3, 3]), "distinct"),
        (lambda d: d["layers"].pop(), "one entry per model layer"),
        (lambda d: [e.update(dropped=True) for e in d["layers"]], "drops every layer"),
    ],
)
def test_malformed_plans_are_config_errors(tmp_path: Path, edit, match: str) -> None:  # noqa: ANN001
    model = tiny_model()
    data = allocate(model, run_scorer("magnitude", model, None, AnalyseConfig()), Budget("params", 0.5)).to_dict()
    edit(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as err:
        Plan.load(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_or_broken_plan_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        Plan.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Plan.load(tmp_path / "bad.json")
