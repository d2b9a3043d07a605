from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressor.errors import ConfigError
from compressor.sensitivity.analyse import analyse
from compressor.sensitivity.config import AnalyseConfig
from compressor.sensitivity.cost import layer_shapes
from compressor.sensitivity.masks import make_batches
from compressor.sensitivity.plan import Plan
from tests.models import run_stage_to, save_tiny_checkpoint, tiny_model


def test_analyse_writes_report_heatmap_and_plan(tokenizer, data, out: Path) -> None:  # noqa: ANN001
    model = tiny_model(num_hidden_layers=3)
    config = AnalyseConfig(scorer="taylor", samples=16, batch_size=8, budget="flops=0.5", min_heads=0)
    report = analyse(model, config, tokenizer=tokenizer, data=data)
    out.mkdir()
    paths = report.save(out)
    assert paths == {
        "sensitivity": out / "sensitivity.json",
        "heatmap": out / "heatmap.png",
        "plan": out / "plan.json",
    }
    assert sorted(p.name for p in out.iterdir()) == ["heatmap.png", "plan.json", "sensitivity.json"]
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "sensitivity.json").read_text())
    assert saved["scorer"] == "taylor" and saved["config"]["fields"]["budget"] == "flops=0.5"
    assert [len(layer["heads"]["scores"]) for layer in saved["layers"]] == [4, 4, 4]
    assert [layer["neurons"]["count"] for layer in saved["layers"]] == [37, 37, 37]
    assert [t["rank"] for t in saved["tensors"]] == list(range(1, 19))
    scores = [t["score"] for t in saved["tensors"]]
    assert scores == sorted(scores, reverse=True)
    assert Plan.load(out / "plan.json").to_dict() == report.plan.to_dict()
    assert len(layer_shapes(model)) == 3  # analyse never prunes the model it scores
    assert report.summary()["plan"]["predicted"]["flops"]["fraction"] <= 0.5
    table = report.table()
    assert len(table["rows"]) == 3 and table["headers"][:2] == ["layer", "heads kept"]
    assert table["caption"].startswith("encoder params ")


def test_analyse_without_budget_or_data(tokenizer, out: Path) -> None:  # noqa: ANN001
    report = analyse(tiny_model(), AnalyseConfig(scorer="magnitude", budget="none"), tokenizer=tokenizer)
    out.mkdir()
    assert set(report.save(out)) == {"sensitivity", "heatmap"}
    assert report.plan is None and not (out / "plan.json").exists() and (out / "heatmap.png").is_file()
    with pytest.raises(ConfigError, match="needs labelled data"):
        analyse(tiny_model(), AnalyseConfig(scorer="fisher"), tokenizer=tokenizer)


def test_failed_analysis_leaves_no_partial_output(tokenizer, data, tmp_path: Path, out: Path) -> None:  # noqa: ANN001
    config = AnalyseConfig(scorer="magnitude", budget="params=0.05", min_heads=4)
    with pytest.raises(ConfigError, match="per-layer minimum"):
        analyse(tiny_model(), config, tokenizer=tokenizer, data=data)
    # the analyse stage (what `compressor analyse` and a recipe run) writes its directory whole or not at all
    with pytest.raises(ConfigError, match="per-layer minimum"):
        run_stage_to("analyse", config, out, model=save_tiny_checkpoint(tmp_path / "ckpt"))
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp*"))


def test_a_layer_choice_beyond_the_model_is_refused_before_scoring(
    tokenizer,
    data,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    import compressor.sensitivity.analyse as analyse_module

    def no_scoring(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("scored before the layer choice was checked")

    monkeypatch.setattr(analyse_module, "run_scorer", no_scoring)
    config = AnalyseConfig(scorer="fisher", samples=16, budget="flops=0.5", layer_choice="0,3")
    with pytest.raises(ConfigError, match="names layer 3 but the model has 3 layers"):
        analyse(tiny_model(num_hidden_layers=3), config, tokenizer=tokenizer, data=data)
    for choice in ("spread", "score"):  # more layers than the model has: refused before scoring, by either rule
        deep = AnalyseConfig(scorer="fisher", samples=16, budget="flops=0.5", layer_choice=choice, keep_layers=4)
        with pytest.raises(ConfigError, match="must be between 1 and the model's 3 layers"):
            analyse(tiny_model(num_hidden_layers=3), deep, tokenizer=tokenizer, data=data)


def test_rescore_scores_the_kept_layers_in_the_model_without_the_dropped_ones(
    tokenizer,
    data,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    import compressor.sensitivity.analyse as analyse_module
    from compressor.arch.surgery import drop_layers_
    from compressor.sensitivity.allocate import allocate
    from compressor.sensitivity.config import parse_budget
    from compressor.sensitivity.scorers import run_scorer

    scored: list[int] = []  # the depth of every model scored

    def counting(name, model, batches, config):  # noqa: ANN001, ANN202
        scored.append(len(layer_shapes(model)))
        return run_scorer(name, model, batches, config)

    monkeypatch.setattr(analyse_module, "run_scorer", counting)
    model = tiny_model(num_hidden_layers=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fields = dict(scorer="fisher", samples=16, batch_size=8, budget="flops=0.3", layer_choice="spread", depth=0.5)
    first = analyse(model, AnalyseConfig(**fields), tokenizer=tokenizer, data=data)
    again = analyse(model, AnalyseConfig(**fields, rescore=True), tokenizer=tokenizer, data=data)
    assert scored == [4, 4, 2]  # one pass without rescore; with it, the full model and then the two kept layers
    assert first.plan.kept_layers == again.plan.kept_layers == [0, 3]
    assert len(layer_shapes(model)) == 4 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    reduced = tiny_model(num_hidden_layers=4)  # the same weights (seeded), with layers 1 and 2 removed by hand
    drop_layers_(reduced, [0, 3])
    batches = make_batches(tokenizer, data, samples=16, seq_len=128, batch_size=8, seed=0, num_labels=2)
    expected = run_scorer("fisher", reduced, batches, AnalyseConfig(**fields))
    for position, layer in enumerate([0, 3]):
        assert torch.allclose(again.scores.heads[layer], expected.heads[position], rtol=1e-6, atol=0)
        assert torch.allclose(again.scores.neurons[layer], expected.neurons[position], rtol=1e-6, atol=0)
    for layer in (1, 2):  # the dropped layers keep the first pass's scores in the report
        assert torch.equal(again.scores.heads[layer], first.scores.heads[layer])
    assert not torch.allclose(again.scores.neurons[3], first.scores.neurons[3], rtol=0.01, atol=0)

    # the plan is the allocation of the new scores within the kept layers, under the same budget
    zeroed = [torch.zeros_like(again.scores.neurons[1]), torch.zeros_like(again.scores.neurons[2])]
    allocation_scores = type(again.scores)(
        scorer="fisher",
        heads=[again.scores.heads[0], torch.zeros(4), torch.zeros(4), again.scores.heads[3]],
        neurons=[again.scores.neurons[0], *zeroed, again.scores.neurons[3]],
        tensors={},
        joint_scale=True,
    )
    plan = allocate(model, allocation_scores, parse_budget("flops=0.3"), keep_layers=2, layer_choice="0,3")
    assert [(p.heads, p.neurons) for p in again.plan.layers] == [(p.heads, p.neurons) for p in plan.layers]
    assert again.plan.predicted["flops"]["fraction"] <= 0.3

    scored.clear()  # nothing dropped: rescore has nothing to do, the plan is the first one
    whole = dict(scorer="fisher", samples=16, batch_size=8, budget="flops=0.6")
    plain = analyse(model, AnalyseConfig(**whole), tokenizer=tokenizer, data=data)
    same = analyse(model, AnalyseConfig(**whole, rescore=True), tokenizer=tokenizer, data=data)
    assert scored == [4, 4] and same.plan.to_dict() == plain.plan.to_dict()
