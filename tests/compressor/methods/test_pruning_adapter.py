from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from compressor.arch.structure import structure_of
from compressor.arch.surgery import apply_structure_, prune_heads_
from compressor.checkpoint import load_model, save_model
from compressor.data import load_data
from compressor.errors import ConfigError, ModelError
from compressor.methods import METHODS
from compressor.methods.base import (
    adapter_state,
    count_trainable,
    load_adapter_state_,
    only_stock_modules,
    trainable_parameters,
)
from compressor.methods.pruning_adapter import (
    PruningAdapterConfig,
    default_top_layers,
    inject_pruning_adapter,
    lora_ranks,
    merge_pruning_adapter,
    plan_heads,
    prepare_pruning_adapter,
    rank_layers,
)
from compressor.schema import config_from_dict, config_to_dict
from compressor.sensitivity.masks import make_batches
from compressor.sensitivity.scorers import head_importance
from tests.models import encode, tiny_model, tiny_tokenizer, write_tiny_data

HIDDEN, HEAD_DIM, LABELS = 32, 8, 2  # tests.models.tiny_model: 2 layers × 4 heads
NAN = float("nan")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return load_data(write_tiny_data(tmp_path_factory.mktemp("data") / "train.tsv", 24))


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def _perturb_(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("heads_fraction", 1.0),
        ("heads_fraction", -0.1),
        ("examples", 0),
        ("batch_size", 0),
        ("max_length", 0),
        ("rank", 0),
        ("high_rank", 2),
        ("top_layers", 0),
        ("high_rank_layers", [-1]),
        ("high_rank_layers", [1, 1]),
        ("alpha", 0.0),
        ("dropout", 1.0),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        PruningAdapterConfig(**{field: value})


def test_config_round_trips_with_the_chosen_layers() -> None:
    cfg = PruningAdapterConfig(high_rank_layers=[0, 5], top_layers=2)
    assert config_from_dict(PruningAdapterConfig, config_to_dict(cfg)) == cfg
    assert [default_top_layers(n) for n in (12, 6, 2, 1)] == [4, 2, 1, 1]


def test_plan_ranks_heads_globally_after_per_layer_normalisation() -> None:
    importance = torch.tensor([[10.0, 20.0, 30.0, 40.0], [1.0, 1.0, 1.0, 0.1], [5.0, 6.0, NAN, NAN]])
    # normalised: layer 0 → .18 .37 .55 .73; layer 1 → .58 .58 .58 .06; layer 2 → .64 .77
    assert plan_heads(importance, 0.25) == [[1, 2, 3], [0, 1, 2], [0, 1]]  # round(0.25 · 10) = 2 (not 3 raw-lowest)
    assert plan_heads(importance, 0.0) == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1]]
    assert sum(map(len, plan_heads(torch.tensor([[1.0, NAN], [2.0, NAN]]), 0.9))) == 1  # one head always stays


def test_rank_layers_by_summed_raw_importance_of_kept_heads() -> None:
    importance = torch.tensor([[1.0, 1.0, 9.0], [3.0, 3.0, 3.0], [4.0, 4.0, 0.0]])
    keep = [[0, 1], [0, 1, 2], [0, 1, 2]]  # layer 0 lost its 9
    assert rank_layers(importance, keep, sources=[0, 1, 2], top=2) == [1, 2]
    assert rank_layers(importance, keep, sources=[3, 5, 7], top=1) == [5]  # reported as source-layer ids


def test_prepare_removes_the_planned_heads_and_the_pruned_model_saves_and_loads_exactly(
    tokenizer: object, data: object, tmp_path: Path
) -> None:
    cfg = PruningAdapterConfig(examples=16, batch_size=8)
    model = tiny_model()
    reference = copy.deepcopy(model)
    prepare_pruning_adapter(model, cfg, data, tokenizer)
    batches = make_batches(tokenizer, data, samples=16, seq_len=128, batch_size=8, seed=0, num_labels=2)
    expected = plan_heads(head_importance(reference, batches, normalise=False), 0.3)
    layers = structure_of(model)["layers"]
    assert [e["heads"] for e in layers] == expected  # unpruned before, so current indices are original ids
    assert sum(len(e["heads"]) for e in layers) == 8 - round(0.3 * 8)
    for block, kept in zip(model.bert.encoder.layer, expected, strict=True):
        assert block.attention.self.query.weight.shape == (HEAD_DIM * len(kept), HIDDEN)
        assert block.attention.output.dense.weight.shape == (HIDDEN, HEAD_DIM * len(kept))
    assert len(cfg.high_rank_layers) == default_top_layers(2) == 1
    batch = encode(tokenizer)
    save_model(model, tokenizer, tmp_path / "pruned")
    loaded, _ = load_model(tmp_path / "pruned")
    assert structure_of(loaded)["layers"] == layers
    torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), atol=0, rtol=0)


def test_prepare_keeps_layers_chosen_by_hand(tokenizer: object, data: object) -> None:
    cfg = PruningAdapterConfig(examples=8, batch_size=8, heads_fraction=0.0, high_rank_layers=[0])
    prepare_pruning_adapter(tiny_model(), cfg, data, tokenizer)
    assert cfg.high_rank_layers == [0]


def _pruned_tiny() -> torch.nn.Module:
    model = tiny_model()
    prune_heads_(model, 0, [0, 2])
    return model


def test_trains_exactly_lora_layernorms_and_classifier_with_per_layer_ranks() -> None:
    model = inject_pruning_adapter(_pruned_tiny(), PruningAdapterConfig(rank=4, high_rank=8, high_rank_layers=[1]))
    names = set(trainable_parameters(model))
    assert all("lora_A" in n or "lora_B" in n or "LayerNorm" in n or "classifier" in n for n in names)
    assert sum("LayerNorm" in n for n in names) == 2 * (1 + 2 * 2)  # embeddings + 2 per layer, weight and bias
    ranks = {k.removeprefix("base_model.model.bert.encoder.layer."): r for k, r in lora_ranks(model).items()}
    assert ranks == {f"{i}.attention.self.{p}": r for i, r in ((0, 4), (1, 8)) for p in ("query", "key", "value")}
    lora = 3 * 4 * (HIDDEN + 2 * HEAD_DIM) + 3 * 8 * (HIDDEN + 4 * HEAD_DIM)  # r·(in + out) per q/k/v
    norms = 2 * HIDDEN * (1 + 2 * 2)
    assert count_trainable(model) == lora + norms + HIDDEN * LABELS + LABELS
    a = torch.cat([p.detach().reshape(-1) for n, p in model.named_parameters() if "lora_A" in n])
    b = torch.cat([p.detach().reshape(-1) for n, p in model.named_parameters() if "lora_B" in n])
    assert 0.009 < float(a.std()) < 0.011 and abs(float(a.mean())) < 1e-3  # A ~ N(0, 0.01²)
    assert torch.count_nonzero(b) == 0  # B = 0


def test_merge_folds_lora_into_the_pruned_qkv_exactly(tokenizer: object) -> None:
    batch = encode(tokenizer)
    base = _pruned_tiny()
    plain = _logits(base, batch)
    model = inject_pruning_adapter(_pruned_tiny(), PruningAdapterConfig(high_rank_layers=[0]))
    torch.testing.assert_close(_logits(model, batch), plain)  # B = 0 at start
    _perturb_(model)
    trained = _logits(model, batch)
    assert not torch.allclose(trained, plain, atol=1e-3)
    merged = merge_pruning_adapter(model)
    assert only_stock_modules(merged) == []
    assert {k: v.shape for k, v in merged.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    torch.testing.assert_close(_logits(merged, batch), trained, atol=1e-4, rtol=1e-4)


def test_restore_on_a_fresh_base_reproduces_the_trained_model(tokenizer: object) -> None:
    batch = encode(tokenizer)
    method = METHODS.get("pruning-adapter")
    cfg = PruningAdapterConfig(high_rank_layers=[1], dropout=0.0)
    model = inject_pruning_adapter(_pruned_tiny(), cfg)
    _perturb_(model)
    trained = _logits(model, batch)
    structure = structure_of(model)
    fresh = tiny_model()
    apply_structure_(fresh, structure)
    fresh = inject_pruning_adapter(fresh, config_from_dict(PruningAdapterConfig, config_to_dict(cfg)))
    load_adapter_state_(fresh, adapter_state(model, method))
    torch.testing.assert_close(_logits(fresh, batch), trained, atol=1e-6, rtol=1e-6)


def test_a_layer_without_heads_gets_no_lora_but_its_layernorm_trains(tokenizer: object) -> None:
    model = tiny_model()
    prune_heads_(model, 0, [])
    model = inject_pruning_adapter(model, PruningAdapterConfig(high_rank_layers=[0, 1]))
    assert all(".layer.1." in k for k in lora_ranks(model))
    assert model.base_model.model.bert.encoder.layer[0].attention.LayerNorm.weight.requires_grad
    _perturb_(model)
    batch = encode(tokenizer)
    trained = _logits(model, batch)
    torch.testing.assert_close(_logits(merge_pruning_adapter(model), batch), trained, atol=1e-4, rtol=1e-4)


def test_inject_refuses_unknown_layers_and_double_injection() -> None:
    with pytest.raises(ConfigError, match="high_rank_layers"):
        inject_pruning_adapter(tiny_model(), PruningAdapterConfig(high_rank_layers=[2]))
    model = inject_pruning_adapter(tiny_model(), PruningAdapterConfig())
    assert set(lora_ranks(model).values()) == {4}  # no layers chosen: the low rank everywhere
    with pytest.raises(ModelError, match="already"):
        inject_pruning_adapter(model, PruningAdapterConfig())


def test_finetune_and_merge_stages_run_end_to_end(tmp_path: Path) -> None:
    from compressor.stages.finetune import FinetuneConfig, load_adapter_dir
    from compressor.stages.merge import MergeConfig
    from compressor.train.config import TrainConfig
    from tests.models import run_stage_to, save_tiny_checkpoint

    base = save_tiny_checkpoint(tmp_path / "base")
    cfg = PruningAdapterConfig(examples=16, batch_size=8)
    train = TrainConfig(epochs=1, max_steps=4, batch_size=8, save_steps=4, logging_steps=2, lr=1e-3)
    config = FinetuneConfig(method="pruning-adapter", options=cfg, train=train)
    run_stage_to("finetune", config, tmp_path / "run", model=base, train=write_tiny_data(tmp_path / "train.tsv", 24))
    saved = config_from_dict(PruningAdapterConfig, json.loads((tmp_path / "run" / "method.json").read_text()))
    assert saved.high_rank_layers == cfg.high_rank_layers and len(saved.high_rank_layers) == 1
    structure = json.loads((tmp_path / "run" / "structure.json").read_text())
    assert sum(len(e["heads"]) for e in structure["layers"]) == 6
    trained, tok, _ = load_adapter_dir(tmp_path / "run")
    summary = run_stage_to("merge", MergeConfig(), tmp_path / "merged", adapter=tmp_path / "run")
    assert summary["max_abs_diff"] <= 1e-4
    loaded, _ = load_model(tmp_path / "merged")
    assert structure_of(loaded)["layers"] == structure["layers"]
    batch = encode(tok)
    torch.testing.assert_close(_logits(loaded, batch), _logits(trained, batch), atol=1e-4, rtol=1e-4)
