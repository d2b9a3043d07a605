"""Width pruning: one mask over the residual stream, recorded in the structure, saved and loaded, exported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor.arch.parts import hidden_width
from compressor.arch.structure import ensure_structure, hidden_positions
from compressor.arch.surgery import drop_layers_, prune_ffn_, prune_heads_, prune_hidden_
from compressor.checkpoint import load_model, save_model
from compressor.errors import ConfigError, PruneError
from compressor.prune.units import apply_plan_
from compressor.prune.vocab import prune_vocab_
from compressor.sensitivity.analyse import analyse
from compressor.sensitivity.config import AnalyseConfig
from compressor.sensitivity.masks import hidden_importance, hidden_magnitude, make_batches
from compressor.sensitivity.plan import Plan
from tests.models import encode, tiny_model, tiny_tokenizer, write_tiny_data


def _narrow(model: torch.nn.Module) -> torch.nn.Module:
    prune_heads_(model, 0, [1, 3])
    prune_heads_(model, 1, [])  # a headless layer keeps its bias and LayerNorm: both must narrow too
    prune_ffn_(model, 2, [])  # so does an FFN-less one
    prune_hidden_(model, list(range(1, 32, 2)))
    prune_hidden_(model, [0, 2, 3, 5, 7, 11, 13])
    return model


def test_width_is_recorded_in_original_dimensions() -> None:
    model = _narrow(tiny_model(num_hidden_layers=3))
    assert hidden_width(model) == 7
    assert ensure_structure(model)["hidden"] == {"source": 32, "kept": [1, 5, 7, 11, 15, 23, 27]}
    assert model.config.hidden_size == 32  # head sizes are derived from the source width
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["bert.embeddings.word_embeddings.weight"] == (41, 7)
    assert shapes["bert.encoder.layer.0.attention.self.query.weight"] == (16, 7)
    assert shapes["bert.encoder.layer.0.attention.output.dense.weight"] == (7, 16)
    assert shapes["bert.encoder.layer.1.attention.bias"] == (7,)
    assert shapes["bert.encoder.layer.2.output.dense.bias"] == (7,)  # BiasOnly, in place of the FFN-out linear
    assert shapes["bert.pooler.dense.weight"] == (32, 7)


def test_a_narrow_model_saves_and_loads_exactly(tmp_path: Path) -> None:
    model = _narrow(tiny_model(num_hidden_layers=3))
    drop_layers_(model, [0, 2])
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    prune_vocab_(model, range(20), tokenizer.unk_token_id)
    inputs = encode(tokenizer)
    save_model(model, tokenizer, tmp_path / "narrow")
    loaded, _ = load_model(tmp_path / "narrow")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, atol=0, rtol=0)


def test_keeping_every_dimension_changes_nothing(tmp_path: Path) -> None:
    model, inputs = tiny_model(), encode(tiny_tokenizer(tmp_path / "tok"))
    with torch.no_grad():
        before = model(**inputs).logits
        prune_hidden_(model, list(range(32)))
        torch.testing.assert_close(model(**inputs).logits, before)
    assert ensure_structure(model)["hidden"] is None


def test_bad_dimensions_are_refused() -> None:
    with pytest.raises(PruneError, match="at least one hidden dimension"):
        prune_hidden_(tiny_model(), [])
    with pytest.raises(PruneError, match=r"distinct indices in \[0, 32\)"):
        prune_hidden_(tiny_model(), [0, 40])


def test_teacher_positions_of_a_narrow_student() -> None:
    teacher = tiny_model()
    prune_hidden_(teacher, list(range(8, 32)))
    student = tiny_model()
    prune_hidden_(student, [9, 10, 31])
    assert hidden_positions(ensure_structure(student), ensure_structure(teacher)) == [1, 2, 23]
    assert hidden_positions(ensure_structure(teacher), ensure_structure(teacher)) is None


def _dead_dimension(model: torch.nn.Module, d: int) -> torch.nn.Module:
    """Dimension `d` carries nothing: zero in every table and every LayerNorm's gain and bias."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embeddings" in name and param.dim() == 2:
                param[:, d] = 0
            elif "LayerNorm" in name:
                param[d] = 0
    return model


@pytest.mark.parametrize("scorer", ["fisher", "magnitude"])
def test_a_dead_dimension_scores_lowest(tmp_path: Path, scorer: str) -> None:
    model = _dead_dimension(tiny_model(), 13)
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    if scorer == "magnitude":
        scores = hidden_magnitude(model)
    else:
        from compressor.data import load_data

        data = load_data(write_tiny_data(tmp_path / "d.tsv", 16))
        batches = make_batches(tokenizer, data, samples=16, seq_len=32, batch_size=8, num_labels=2)
        scores = hidden_importance(model, batches)
    assert int(scores.argmin()) == 13


def test_a_plan_keeps_the_most_important_dimensions(tmp_path: Path) -> None:
    model = _dead_dimension(tiny_model(), 13)
    config = AnalyseConfig(scorer="magnitude", budget="flops=0.6", hidden=0.75)
    plan = analyse(model, config, tokenizer=tiny_tokenizer(tmp_path / "tok")).plan
    assert plan is not None and len(plan.hidden) == 24 and 13 not in plan.hidden
    assert plan.predicted["flops"]["fraction"] <= 0.6
    again = Plan.from_dict(plan.to_dict())
    apply_plan_(model, again)
    assert hidden_width(model) == 24


def test_a_narrow_plan_needs_a_params_or_flops_budget() -> None:
    with pytest.raises(ConfigError, match="hidden"):
        AnalyseConfig(budget="latency-ms=3", hidden=0.5)


@pytest.mark.parametrize("quantize", ["none", "dynamic"])
def test_a_narrow_model_exports_with_parity(tmp_path: Path, quantize: str) -> None:
    from exporters.onnx.config import ExportConfig
    from exporters.onnx.export import export_onnx

    model = _narrow(tiny_model(num_hidden_layers=3))
    config = ExportConfig(quantize=quantize, fuse="off", max_length=32, seq_len=32, timing_runs=2, eval_samples=8)
    report = export_onnx(model, config, tokenizer=tiny_tokenizer(tmp_path / "tok"), out_dir=tmp_path / "art")
    assert report.parity_max_abs_diff <= 1e-4
    assert report.manifest["structure"]["hidden"]["kept"] == [1, 5, 7, 11, 15, 23, 27]
