from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from compressor.arch.structure import structure_of
from compressor.data import load_data
from compressor.errors import ConfigError
from compressor.prune.api import prune_
from compressor.prune.config import PruneConfig
from compressor.prune.schedule import count_schedule, kept_fractions
from compressor.prune.units import prune_by_fraction_
from compressor.sensitivity.analyse import analyse
from compressor.sensitivity.config import AnalyseConfig
from compressor.sensitivity.cost import encoder_params
from tests.models import encode, tiny_model, tiny_tokenizer, write_tiny_data


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"heads": 1.5}, "`heads`"),
        ({"ffn": -0.1}, "`ffn`"),
        ({"ffn": 1.0}, "`ffn`"),
        ({"plan": "p.json", "heads": 0.2}, "not both"),
        ({"recover": "magic"}, "`recover`"),
        ({"iterations": 0}, "`iterations`"),
        ({"heads_by": "gradient", "heads": 0.25}, "`heads_by` must be one of magnitude, update"),
        ({"heads_by": "update", "heads": 0.25}, "needs `heads` .* and `update_base`"),
        ({"heads_by": "update", "update_base": "minilm"}, "needs `heads`"),
        ({"update_base": "minilm", "heads": 0.25}, "only used with `heads_by: update` or `unstructured_by: update`"),
        ({"unstructured": 1.0}, "`unstructured` must be a share in"),
        ({"unstructured": "0.5"}, "`unstructured` must be a share in \\[0, 1\\); got '0.5'"),  # not a TypeError
        ({"heads": "0.5"}, "`heads` must be a fraction in \\[0, 1\\]; got '0.5'"),
        ({"ffn": True}, "`ffn` must be a fraction in \\[0, 1\\]; got True"),
        ({"unstructured": 0.5, "unstructured_by": "gradient"}, "`unstructured_by` must be one of magnitude, update"),
        ({"unstructured": 0.5, "unstructured_roles": ["query", "qkv"]}, "`unstructured_roles` must be"),
        ({"unstructured": 0.5, "unstructured_by": "update"}, "`unstructured_by: update` needs `update_base`"),
        ({"schedule": "cosine"}, "`schedule`"),
        ({"recover": "distill", "recover_steps": 2, "iterations": 3}, "`recover_steps`"),
        ({"recover": "distill", "recover_method": "nope"}, "nope"),
        ({"recover": "reconstruct", "recover_method": "lora"}, "`recover_method`"),
        ({"lr": 2.0}, "`lr`"),
        ({"samples": 0}, "`samples`"),
    ],
)
def test_config_rejects_bad_values(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PruneConfig(**values)


def test_config_defaults_distill_steps() -> None:
    assert PruneConfig(recover="distill").recover_steps == 500
    assert PruneConfig(recover_steps=10).recover == "distill"
    epochs = PruneConfig(recover_epochs=0.5)
    assert (epochs.recover, epochs.recover_steps) == ("distill", 0)
    with pytest.raises(ConfigError, match="`recover_steps` or `recover_epochs`, not both"):
        PruneConfig(recover_steps=10, recover_epochs=1.0)
    with pytest.raises(ConfigError, match="`recover_epochs` must be >= 0"):
        PruneConfig(recover_epochs=-1.0)
    with pytest.raises(ConfigError, match="set the distillation length, but recover is 'reconstruct'"):
        PruneConfig(recover="reconstruct", recover_epochs=2.0)
    assert PruneConfig(recover="reconstruct", recover_epochs=0).recover == "reconstruct"


def test_recovery_in_epochs_follows_the_data_size(tmp_path: Path) -> None:
    from compressor.data import load_data

    model, tok = tiny_model(), tiny_tokenizer(tmp_path / "tok")
    data = load_data(write_tiny_data(tmp_path / "train.tsv", 20))
    config = PruneConfig(heads=0.5, recover_epochs=1.5, batch_size=8, seed=0)
    report = prune_(model, config, tokenizer=tok, data=data, work_dir=tmp_path / "work", quiet=True)
    assert report.recovery["distill"]["steps"] == 4  # ⌈20 rows × 1.5 / 8⌉


@pytest.mark.parametrize("schedule", ["geometric", "linear"])
def test_schedules_end_at_one_shot_counts(schedule: str) -> None:
    for n, removed in ((12, 0.5), (37, 0.4), (4, 1.0), (1536, 0.7), (0, 0.5)):
        counts = count_schedule(n, removed, 4, schedule)
        assert counts[-1] == count_schedule(n, removed, 1, schedule)[0] == n - int(n * removed + 1e-9)
        assert all(a >= b for a, b in zip([n, *counts], counts, strict=False))


def test_geometric_keeps_the_same_share_each_step() -> None:
    shares = kept_fractions(0.25, 2, "geometric")
    assert shares == pytest.approx([0.5, 0.25])
    assert kept_fractions(0.4, 3, "linear") == pytest.approx([0.8, 0.6, 0.4])
    assert kept_fractions(0.0, 2, "geometric") == pytest.approx([0.5, 0.0])  # a geometric series never reaches 0


def test_one_step_equals_prune_by_fraction() -> None:
    reference = tiny_model(1)
    prune_by_fraction_(reference, 0.5, 0.3)
    model = tiny_model(1)
    prune_(model, PruneConfig(heads=0.5, ffn=0.3))
    assert structure_of(model) == structure_of(reference)


def test_iterative_schedule_reaches_the_requested_structure(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path / "tok")
    data = load_data(write_tiny_data(tmp_path / "train.tsv", 24))
    model = tiny_model(2)
    cfg = PruneConfig(heads=0.5, ffn=0.4, recover="reconstruct", iterations=3, schedule="linear", samples=16)
    report = prune_(model, cfg, tokenizer=tok, data=data, quiet=True)
    assert report.structure == [(0, 2, 23), (1, 2, 23)]
    assert [r["structure"][0][1:] for r in report.iterations] == [(3, 32), (3, 28), (2, 23)]
    params = [r["encoder_params"] for r in report.iterations]
    assert params == sorted(params, reverse=True) and params[-1] == report.encoder_params_after
    assert all("reconstruct" in r for r in report.iterations) and report.recovery == {
        "reconstruct": report.iterations[-1]["reconstruct"]
    }
    with torch.no_grad():
        assert torch.isfinite(model(**encode(tok)).logits).all()


def test_iterative_plan_rescores_each_round_and_meets_its_budget(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path / "tok")
    model = tiny_model(3)
    analysed = analyse(copy.deepcopy(model), AnalyseConfig(scorer="magnitude", budget="params=0.5"), tokenizer=tok)
    plan = analysed.save(tmp_path)["plan"]
    target = analysed.plan.predicted["params"]["after"]
    start = encoder_params(model)
    report = prune_(model, PruneConfig(plan=str(plan), iterations=2), tokenizer=tok)
    assert [r["rescored"]["scorer"] for r in report.iterations] == ["magnitude", "magnitude"]
    assert report.iterations[0]["rescored"]["kept"] == pytest.approx(0.5**0.5, abs=0.03)  # geometric: √0.5 first
    neuron_cost = 2 * model.config.hidden_size + 1
    assert target - neuron_cost <= encoder_params(model) <= target + neuron_cost
    assert encoder_params(model) < 0.55 * start


def test_vocabulary_pruning_and_accuracy_come_with_the_prune(tmp_path: Path) -> None:
    from compressor.arch.modules import RemappedEmbedding
    from compressor.prune.vocab import used_token_ids
    from compressor.train.loop import evaluate

    tok = tiny_tokenizer(tmp_path / "tok")
    texts = load_data(write_tiny_data(tmp_path / "train.tsv", 10))
    val = load_data(write_tiny_data(tmp_path / "val.tsv", 10))  # the same sentences: no token falls back
    model = tiny_model(4)
    report = prune_(model, PruneConfig(heads=0.25, vocab="train"), tokenizer=tok, eval_data=val, vocab_data=texts)
    assert report.structure == [(0, 3, 37), (1, 3, 37)]
    embedding = model.bert.embeddings.word_embeddings
    assert isinstance(embedding, RemappedEmbedding)
    assert report.vocab["kept"] == embedding.weight.shape[0] == len(used_token_ids(tok, texts.texts))
    assert report.vocab["source_size"] == tiny_model().config.vocab_size
    assert report.vocab["model_bytes_after"] < report.vocab["model_bytes_before"]
    assert report.vocab["validation_unknown_rate"] == 0.0
    assert report.accuracy == evaluate(model, tok, val)["accuracy"]

    plain = tiny_model(4)
    report = prune_(plain, PruneConfig(heads=0.25), tokenizer=tok)
    assert report.vocab is None and report.accuracy is None
    assert type(plain.bert.embeddings.word_embeddings) is torch.nn.Embedding


def _moved(base: torch.nn.Module, moves: dict[int, list[int]]) -> torch.nn.Module:
    """`base` after a "fine-tune" that moved the query and value rows of the given heads per layer (head size 8)."""
    model = copy.deepcopy(base)
    with torch.no_grad():
        for layer, heads in moves.items():
            attention = model.bert.encoder.layer[layer].attention.self
            for h in heads:
                attention.query.weight[8 * h : 8 * h + 8] += 0.05
                attention.value.weight[8 * h : 8 * h + 8] -= 0.05
    return model


@pytest.mark.parametrize("iterations", [1, 2])
def test_heads_by_update_keeps_the_heads_fine_tuning_moved(iterations: int) -> None:
    """DSEE's structured step: the heads whose q/v rows changed least go, whatever their magnitude."""
    base = tiny_model(seed=4)
    model = _moved(base, {0: [1, 3], 1: [0, 2]})
    with torch.no_grad():  # make the unmoved heads the *largest* by magnitude, so magnitude would keep them
        for layer, heads in {0: [0, 2], 1: [1, 3]}.items():
            for h in heads:
                for name in ("query", "key", "value"):
                    getattr(base.bert.encoder.layer[layer].attention.self, name).weight[8 * h : 8 * h + 8] *= 3
                    getattr(model.bert.encoder.layer[layer].attention.self, name).weight[8 * h : 8 * h + 8] *= 3
    config = PruneConfig(heads=0.5, heads_by="update", update_base="base", iterations=iterations)
    prune_(model, config, base=base)
    assert [e["heads"] for e in structure_of(model)["layers"]] == [[1, 3], [0, 2]]
    by_magnitude = _moved(base, {0: [1, 3], 1: [0, 2]})
    prune_(by_magnitude, PruneConfig(heads=0.5))
    assert [e["heads"] for e in structure_of(by_magnitude)["layers"]] == [[0, 2], [1, 3]]
    with pytest.raises(ConfigError, match="needs the base checkpoint"):
        prune_(tiny_model(), config)


def _zeros(model: torch.nn.Module, roles: tuple[str, ...] = ("query", "value")) -> dict[str, torch.Tensor]:
    return {
        name: (p == 0)
        for name, p in model.named_parameters()
        if name.endswith(".weight") and any(f".{r}." in name for r in roles)
    }


def test_unstructured_by_update_zeroes_what_fine_tuning_left_and_keeps_it_through_distillation(
    tmp_path: Path,
) -> None:
    """DSEE's unstructured step: the q/v entries fine-tuning moved least become zero, and stay zero while the
    recovery trains every weight."""
    base = tiny_model(seed=5)
    model = copy.deepcopy(base)
    moved = {}
    with torch.no_grad():  # "fine-tuning" moved a random quarter of each q/v matrix, by more than any weight
        for name, p in model.named_parameters():
            if name.endswith(("query.weight", "value.weight")):
                mask = torch.rand(p.shape, generator=torch.Generator().manual_seed(len(moved))) < 0.25
                p.add_(mask * 0.5)
                moved[name] = mask
    data = load_data(write_tiny_data(tmp_path / "train.tsv", 16))
    config = PruneConfig(
        heads=0.25, unstructured=0.6, unstructured_by="update", update_base="base", recover_steps=3, batch_size=4
    )
    report = prune_(model, config, tokenizer=tiny_tokenizer(tmp_path / "tok"), data=data, base=base, quiet=True)
    zeros = _zeros(model)
    expected = sum(round(0.6 * z.numel()) for z in zeros.values())
    assert report.unstructured["zeroed"] == sum(int(z.sum()) for z in zeros.values()) == expected
    assert report.recovery["distill"]["steps"] == 3  # recovery trained, yet the zeros held
    for name, z in zeros.items():  # heads were cut first: compare the kept rows of the moved mask
        kept_rows = torch.tensor(
            [8 * h + i for h in structure_of(model)["layers"][int(name.split(".")[3])]["heads"] for i in range(8)]
        )
        assert not (z & moved[name][kept_rows]).any(), name  # no moved entry was zeroed
    # by magnitude instead: the smallest |W| go, whatever moved
    by_magnitude = copy.deepcopy(base)
    report = prune_(by_magnitude, PruneConfig(heads=0.25, unstructured=0.5, unstructured_roles=["ffn_in"]))
    weights = [p for n, p in by_magnitude.named_parameters() if n.endswith("intermediate.dense.weight")]
    for w in weights:
        threshold = w.abs().flatten().kthvalue(w.numel() // 2).values
        assert int((w == 0).sum()) == w.numel() // 2 and w.abs()[w != 0].min() >= threshold
    assert report.unstructured["matrices"] == len(weights)
    with pytest.raises(ConfigError, match="needs the base checkpoint"):
        prune_(tiny_model(), PruneConfig(unstructured=0.5, unstructured_by="update", update_base="b", heads=0.25))
