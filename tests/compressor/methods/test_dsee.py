from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from compressor.arch.structure import structure_of
from compressor.checkpoint import load_model, save_model
from compressor.errors import ConfigError, ModelError, PruneError
from compressor.methods import METHODS
from compressor.methods.base import (
    adapter_state,
    count_trainable,
    load_adapter_state_,
    only_stock_modules,
    trainable_parameters,
)
from compressor.methods.dsee import (
    DseeConfig,
    DseeLinear,
    default_heads_to_prune,
    dsee_head_scores,
    dsee_magnitude_prune_,
    dsee_prune_heads_,
    find_support,
    inject_dsee,
)
from compressor.schema import config_from_dict, config_to_dict
from tests.models import encode, tiny_model, tiny_tokenizer

HIDDEN, LAYERS, LABELS = 32, 2, 2  # tests.models.tiny_model
DSEE = METHODS.get("dsee")


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    return encode(tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def _perturb_(model: torch.nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "dsee_B" in name or "dsee_S" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def _dsee_layers(model: torch.nn.Module) -> list[DseeLinear]:
    return [m for m in model.modules() if isinstance(m, DseeLinear)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rank", 0),
        ("alpha", 0.0),
        ("support_size", -1),
        ("support", "largest"),
        ("threshold", -0.1),
        ("iterations", 0),
        ("rank_step", 0),
        ("decompose_rank", 0),
        ("targets", ["query", "nope"]),
        ("targets", []),
        ("unstructured_sparsity", 1.0),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        DseeConfig(**{field: value})


def test_support_size_zero_is_low_rank_only_and_merges_exactly() -> None:
    # the ablation's "sparse part off at equal rank": no support entries, S trains nothing
    model = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=0))
    layers = _dsee_layers(model)
    assert layers and all(m.dsee_index.numel() == 0 and m.dsee_S.numel() == 0 for m in layers)
    for m in layers:
        torch.nn.init.normal_(m.dsee_B, std=0.05)
        x = torch.randn(3, m.base_layer.in_features)
        expected = m.base_layer(x) + m.scale * (x @ m.dsee_A.T @ m.dsee_B.T)
        torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m.delta_weight(), m.scale * m.dsee_B @ m.dsee_A)


def test_config_round_trips_through_json() -> None:
    cfg = DseeConfig(rank=4, support="magnitude", targets=["query", "key"])
    assert config_from_dict(DseeConfig, config_to_dict(cfg)) == cfg
    assert DseeConfig().scale == 2.0  # defaults r 16, α 32


def test_trains_exactly_a_b_s_and_the_classifier() -> None:
    rank, n = 3, 5
    model = inject_dsee(tiny_model(), DseeConfig(rank=rank, support_size=n))
    names = set(trainable_parameters(model))
    expected = {
        f"bert.encoder.layer.{i}.attention.self.{proj}.dsee_{p}"
        for i in range(LAYERS)
        for proj in ("query", "value")
        for p in "ABS"
    }
    assert names == expected | {"classifier.weight", "classifier.bias"}
    # S counts N per matrix, not its dense out×in
    per_matrix = rank * (HIDDEN + HIDDEN) + n
    assert count_trainable(model) == LAYERS * 2 * per_matrix + HIDDEN * LABELS + LABELS
    assert not any("LayerNorm" in n for n in names)


def test_starts_as_the_base_model_and_merges_exactly_after_training(batch: dict[str, torch.Tensor]) -> None:
    base = tiny_model()
    plain = _logits(base, batch)
    model = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=6))
    torch.testing.assert_close(_logits(model, batch), plain)  # B = 0, S = 0
    _perturb_(model)
    trained = _logits(model, batch)
    assert not torch.allclose(trained, plain, atol=1e-3)
    merged = DSEE.merge_(model)
    assert only_stock_modules(merged) == []
    assert set(merged.state_dict()) == set(base.state_dict())
    torch.testing.assert_close(_logits(merged, batch), trained, atol=1e-5, rtol=1e-5)


def test_merge_writes_w0_plus_delta() -> None:
    model = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=6))
    _perturb_(model)
    layer = model.bert.encoder.layer[0].attention.self.query
    w0 = layer.base_layer.weight.detach().clone()
    low_rank = layer.dsee_B.detach() @ layer.dsee_A.detach()
    sparse = torch.zeros(w0.numel()).index_put((layer.dsee_index,), layer.dsee_S.detach()).view_as(w0)
    DSEE.merge_(model)
    scale = 32 / 2  # α / r
    merged = model.bert.encoder.layer[0].attention.self.query.weight
    torch.testing.assert_close(merged, w0 + scale * (low_rank + sparse))


@pytest.mark.parametrize("support", ["decompose", "magnitude", "random"])
def test_support_has_exactly_n_distinct_entries(support: str) -> None:
    n = 7
    model = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=n, support=support))
    for layer in _dsee_layers(model):
        index = layer.dsee_index
        assert index.numel() == n and index.unique().numel() == n
        assert 0 <= int(index.min()) and int(index.max()) < layer.base_layer.weight.numel()
        dense = layer.sparse_dense()
        with torch.no_grad():
            layer.dsee_S.fill_(1.0)
        assert int((layer.sparse_dense() != 0).sum()) == n
        assert int((dense != 0).sum()) == 0


def test_gradients_reach_only_the_support(batch: dict[str, torch.Tensor]) -> None:
    model = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=6))
    layer = model.bert.encoder.layer[1].attention.self.value
    layer.base_layer.weight.requires_grad_(True)  # the dense gradient, for reference only
    model.train()
    model(**batch, labels=torch.tensor([1] * 5 + [0] * 5)).loss.backward()
    dense = layer.base_layer.weight.grad.reshape(-1)
    assert int((dense != 0).sum()) > layer.dsee_index.numel()  # W0 itself would get a dense gradient
    # ∂L/∂S_j = s · ∂L/∂W[index_j]: S sees the dense gradient at its entries and nothing else exists to train
    torch.testing.assert_close(layer.dsee_S.grad, layer.scale * dense[layer.dsee_index])
    # one SGD step on S changes ΔW at exactly the support
    before = layer.delta_weight().detach().clone()
    with torch.no_grad():
        layer.dsee_S -= 0.1 * layer.dsee_S.grad
    changed = torch.nonzero((layer.delta_weight().detach() - before).reshape(-1)).squeeze(1)
    assert set(changed.tolist()) <= set(layer.dsee_index.tolist()) and changed.numel() > 0


def test_decompose_support_finds_planted_sparse_entries_that_magnitude_misses() -> None:
    torch.manual_seed(5)
    low_rank = torch.randn(32, 2) @ torch.randn(2, 32) * 0.1  # rank 2, entries up to ~0.8
    planted = torch.randperm(32 * 32)[:6].sort().values
    sparse = torch.zeros(32 * 32).index_put((planted,), torch.tensor([1.0, -1.0, 0.8, -0.9, 1.2, 0.7])).view(32, 32)
    weight = low_rank + sparse
    cfg = DseeConfig(rank=2, support_size=6, threshold=0.3)
    found = find_support(weight, cfg, torch.Generator().manual_seed(0))
    assert found.tolist() == planted.tolist()
    by_magnitude = find_support(weight, DseeConfig(rank=2, support_size=6, support="magnitude"), torch.Generator())
    assert by_magnitude.tolist() != planted.tolist()  # the low-rank part hides some spikes from |W|


def test_support_is_deterministic_given_the_seed() -> None:
    a = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=5))
    b = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=5))
    c = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=5, support="random", seed=1))
    d = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=5, support="random", seed=2))
    for la, lb in zip(_dsee_layers(a), _dsee_layers(b), strict=True):
        assert torch.equal(la.dsee_index, lb.dsee_index) and torch.equal(la.dsee_A, lb.dsee_A)
    assert any(
        not torch.equal(lc.dsee_index, ld.dsee_index) for lc, ld in zip(_dsee_layers(c), _dsee_layers(d), strict=True)
    )


def test_restore_on_a_fresh_base_reproduces_the_trained_model(batch: dict[str, torch.Tensor]) -> None:
    method = METHODS.get("dsee")
    cfg = DseeConfig(rank=2, support_size=5, support="random", seed=1)
    model = inject_dsee(tiny_model(), cfg)
    _perturb_(model)
    trained = _logits(model, batch)
    state = adapter_state(model, method)
    assert sum(k.endswith("dsee_index") for k in state) == 2 * LAYERS  # the support travels with the adapter
    # even a different seed (another support) is overwritten by the saved indices
    fresh = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=5, support="random", seed=2))
    load_adapter_state_(fresh, state)
    torch.testing.assert_close(_logits(fresh, batch), trained, atol=1e-6, rtol=1e-6)


def test_injecting_twice_is_refused() -> None:
    model = inject_dsee(tiny_model(), DseeConfig(rank=2))
    with pytest.raises(ModelError, match="already"):
        inject_dsee(model, DseeConfig(rank=2))


def _bert_base_shaped(layers: int) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=layers,
        num_attention_heads=12,
        intermediate_size=3072,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def test_trainable_share_on_bert_base_shapes_is_about_half_a_percent() -> None:
    cfg = DseeConfig(support="random")  # counts do not depend on how the support is found
    trainable, total = {}, {}
    for layers in (1, 2):
        model = inject_dsee(_bert_base_shaped(layers), cfg)
        trainable[layers], total[layers] = count_trainable(model), sum(p.numel() for p in model.parameters())
        del model
    per_layer = 2 * (16 * (768 + 768) + 16)  # q and v: B·A (r = 16) + N = 16 sparse values each
    assert trainable[2] - trainable[1] == per_layer
    assert trainable[1] == per_layer + 768 * 2 + 2  # + classifier
    trainable_12 = trainable[1] + 11 * per_layer
    base_12 = total[1] + 11 * (total[2] - total[1]) - trainable_12 + (768 * 2 + 2)  # minus the adapters
    assert base_12 == 109_483_778  # BERT-base with a 2-label head
    assert 0.004 < trainable_12 / base_12 < 0.006  # ≈ 0.54 %


def test_head_scores_from_adapters_equal_scores_from_merged_minus_base() -> None:
    model = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=6))
    _perturb_(model)
    from_adapters = dsee_head_scores(model)
    merged = DSEE.merge_(model)
    from_weights = dsee_head_scores(merged, base=tiny_model())
    for a, b in zip(from_adapters, from_weights, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(PruneError, match="base"):
        dsee_head_scores(merged)


def test_structured_step_removes_the_k_heads_whose_rows_changed_least(
    batch: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    model = inject_dsee(tiny_model(), DseeConfig(rank=2, support_size=6))
    with torch.no_grad():  # ΔW rows of head h (8 rows each) scaled by a per-layer pattern
        for i, quiet in enumerate(([0], [3])):
            for proj in ("query", "value"):
                layer = model.bert.encoder.layer[i].attention.self.get_submodule(proj)
                rows = torch.ones(32, 1)
                for h in quiet:
                    rows[h * 8 : (h + 1) * 8] = 0.01
                layer.dsee_B.copy_(torch.randn(32, 2) * rows)
    scores = dsee_head_scores(model)
    merged = DSEE.merge_(model)
    before = _logits(merged, batch)
    assert default_heads_to_prune(12) == 3 and default_heads_to_prune(4) == 1
    kept = dsee_prune_heads_(merged, scores)
    assert kept == [[1, 2, 3], [0, 1, 2]]
    assert structure_of(merged)["layers"][1]["heads"] == [0, 1, 2]
    assert merged.bert.encoder.layer[0].attention.self.query.weight.shape == (24, 32)
    assert not torch.allclose(_logits(merged, batch), before, atol=1e-4)  # heads really went
    save_model(merged, tiny_tokenizer(tmp_path / "tok"), tmp_path / "pruned")
    loaded, _ = load_model(tmp_path / "pruned")
    assert structure_of(loaded)["layers"] == structure_of(merged)["layers"]
    torch.testing.assert_close(_logits(loaded, batch), _logits(merged, batch))
    again = inject_dsee(merged, DseeConfig(rank=2, support_size=6))  # "retrain": DSEE again on the pruned model
    assert again.bert.encoder.layer[1].attention.self.value.dsee_B.shape == (24, 2)
    _perturb_(again)
    trained = _logits(again, batch)
    torch.testing.assert_close(_logits(DSEE.merge_(again), batch), trained, atol=1e-5, rtol=1e-5)


def test_structured_step_keeps_one_head_and_refuses_unmerged_models() -> None:
    model = inject_dsee(tiny_model(), DseeConfig(rank=2))
    _perturb_(model)
    scores = dsee_head_scores(model)
    with pytest.raises(PruneError, match="merge"):
        dsee_prune_heads_(model, scores)
    merged = DSEE.merge_(model)
    kept = dsee_prune_heads_(merged, scores, k=10)
    assert [len(h) for h in kept] == [1, 1]


def test_unstructured_step_zeroes_the_smallest_entries_of_the_other_linears() -> None:
    model = tiny_model()
    reference = tiny_model()
    zeroed = dsee_magnitude_prune_(model, 0.25)
    ffn_in = model.bert.encoder.layer[0].intermediate.dense.weight.detach()
    assert int((ffn_in == 0).sum()) == round(0.25 * ffn_in.numel())
    kept_min = ffn_in[ffn_in != 0].abs().min()
    dropped = reference.bert.encoder.layer[0].intermediate.dense.weight.detach()[ffn_in == 0]
    assert float(dropped.abs().max()) <= float(kept_min)
    assert torch.equal(
        model.bert.encoder.layer[0].attention.self.query.weight,
        reference.bert.encoder.layer[0].attention.self.query.weight,
    )  # q/v carry adapters
    per_layer = sum(round(0.25 * n) for n in (32 * 32, 32 * 32, 37 * 32, 32 * 37))  # key, attn_out, ffn_in, ffn_out
    assert zeroed == LAYERS * per_layer


def test_unstructured_option_is_reapplied_identically_on_restore(batch: dict[str, torch.Tensor]) -> None:
    method = METHODS.get("dsee")
    cfg = DseeConfig(rank=2, support_size=5, unstructured_sparsity=0.3)
    model = inject_dsee(tiny_model(), cfg)
    assert float((model.bert.encoder.layer[1].output.dense.weight == 0).float().mean()) == pytest.approx(0.3, abs=1e-2)
    _perturb_(model)
    trained = _logits(model, batch)
    fresh = inject_dsee(tiny_model(), cfg)
    load_adapter_state_(fresh, adapter_state(method=method, model=model))
    torch.testing.assert_close(_logits(fresh, batch), trained)
    torch.testing.assert_close(_logits(DSEE.merge_(fresh), batch), trained, atol=1e-5, rtol=1e-5)


def test_finetune_and_merge_stages_run_end_to_end(tmp_path: Path) -> None:
    from compressor.stages.finetune import FinetuneConfig, load_adapter_dir
    from compressor.stages.merge import MergeConfig
    from compressor.train.config import TrainConfig
    from tests.models import run_stage_to, save_tiny_checkpoint, write_tiny_data

    base = save_tiny_checkpoint(tmp_path / "base")
    train = TrainConfig(epochs=1, max_steps=4, batch_size=8, save_steps=4, logging_steps=2, lr=1e-2)
    config = FinetuneConfig(method="dsee", options=DseeConfig(rank=2, support_size=6), train=train)
    summary = run_stage_to(
        "finetune", config, tmp_path / "run", model=base, train=write_tiny_data(tmp_path / "train.tsv", 24)
    )
    assert summary["trainable"] == 2 * 2 * (2 * 64 + 6) + 66
    assert not (tmp_path / "run" / "structure.json").exists()
    trained, tok, method = load_adapter_dir(tmp_path / "run")
    assert method == "dsee"
    assert any(float(m.dsee_S.detach().abs().sum()) > 0 for m in _dsee_layers(trained))  # S trained
    merged = run_stage_to("merge", MergeConfig(), tmp_path / "merged", adapter=tmp_path / "run")
    assert merged["max_abs_diff"] <= 1e-4
    loaded, _ = load_model(tmp_path / "merged")
    assert only_stock_modules(loaded) == []
    batch = encode(tok)
    torch.testing.assert_close(_logits(loaded, batch), _logits(trained, batch), atol=1e-4, rtol=1e-4)
