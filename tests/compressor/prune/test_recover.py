from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from compressor.arch.structure import structure_of
from compressor.arch.surgery import drop_layers_, prune_ffn_, prune_heads_
from compressor.data import load_data
from compressor.methods.base import only_stock_modules
from compressor.prune.config import PruneConfig
from compressor.prune.distill import distill_
from compressor.prune.recover import reconstruct_
from compressor.prune.units import prune_by_fraction_
from compressor.train.distill import distillation_loss, kl_divergence
from compressor.train.loop import evaluate
from tests.models import NEGATIVE, POSITIVE, encode, tiny_model, tiny_tokenizer, write_tiny_data

TEXTS = POSITIVE + NEGATIVE + ["the plot was not very good", "it is a lovely and fun story", "i hated the acting"]


def _hidden(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, output_hidden_states=True).hidden_states[-1]


def _masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float((a - b)[mask.bool()].pow(2).mean())


def _pre_norm_sums(model: torch.nn.Module, batch: dict[str, torch.Tensor], layer: int) -> list[torch.Tensor]:
    """Inputs of layer `layer`'s two LayerNorms (attention, FFN): the pre-LayerNorm sums reconstruction matches."""
    block = model.bert.encoder.layer[layer]
    seen: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
        for m in (block.attention.output.LayerNorm, block.output.LayerNorm)
    ]
    with torch.no_grad():
        model(**batch)
    for h in hooks:
        h.remove()
    return seen


def test_distillation_loss_is_zero_when_student_equals_teacher(tmp_path: Path) -> None:
    model = tiny_model(0)
    batch = encode(tiny_tokenizer(tmp_path))
    with torch.no_grad():
        outputs = model(**batch)
        loss = distillation_loss(copy.deepcopy(model), weight=1.0, temperature=2.0)(model, batch, outputs)
        shifted = outputs.logits + torch.tensor([1.0, -1.0])
        assert float(loss) == pytest.approx(0.0, abs=1e-6)
        assert float(kl_divergence(outputs.logits, shifted, 2.0)) > 1e-2  # and positive otherwise


def test_reconstruct_lowers_the_output_error(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    teacher = tiny_model(3)
    model = copy.deepcopy(teacher)
    prune_by_fraction_(model, heads=0.5, ffn=0.5)
    batch = encode(tok, TEXTS)
    before = _masked_mse(_hidden(model, batch), _hidden(teacher, batch), batch["attention_mask"])
    report = reconstruct_(model, teacher, tok, TEXTS, batch_size=4, quiet=True)
    after = _masked_mse(_hidden(model, batch), _hidden(teacher, batch), batch["attention_mask"])
    assert after < 0.9 * before
    assert len(report["layers"]) == 2 and report["samples"] == len(TEXTS)
    for entry in report["layers"]:
        for part in ("attention", "ffn"):
            assert entry[part]["after"] <= entry[part]["before"] + 1e-12
    assert [e["units"] for e in (report["layers"][0]["attention"], report["layers"][0]["ffn"])] == [2, 19]


def test_reconstruct_report_matches_the_folded_weights(tmp_path: Path) -> None:
    """Layer 0 sees the same input in both models, so its reported errors can be measured directly."""
    tok = tiny_tokenizer(tmp_path)
    teacher = tiny_model(4)
    model = copy.deepcopy(teacher)
    prune_by_fraction_(model, heads=0.5, ffn=0.4)
    batch = encode(tok, TEXTS)
    mask = batch["attention_mask"]
    t_attn, t_ffn = _pre_norm_sums(teacher, batch, 0)
    s_attn, _ = _pre_norm_sums(model, batch, 0)
    report = reconstruct_(model, teacher, tok, TEXTS, batch_size=3, quiet=True)["layers"][0]
    r_attn, r_ffn = _pre_norm_sums(model, batch, 0)
    assert _masked_mse(s_attn, t_attn, mask) == pytest.approx(report["attention"]["before"], rel=1e-3)
    assert _masked_mse(r_attn, t_attn, mask) == pytest.approx(report["attention"]["after"], rel=1e-3)
    assert _masked_mse(r_ffn, t_ffn, mask) == pytest.approx(report["ffn"]["after"], rel=1e-3)
    assert report["ffn"]["after"] < report["ffn"]["before"]


def test_reconstruct_keeps_an_unpruned_model(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    teacher = tiny_model(5)
    model = copy.deepcopy(teacher)
    report = reconstruct_(model, teacher, tok, TEXTS, quiet=True)
    batch = encode(tok, TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, teacher(**batch).logits, atol=1e-5, rtol=1e-5)
    for entry in report["layers"]:
        assert entry["attention"]["scale_min"] == pytest.approx(1.0, abs=1e-4)
        assert entry["ffn"]["scale_max"] == pytest.approx(1.0, abs=1e-4)


def test_reconstruct_handles_empty_and_dropped_layers(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path)
    teacher = tiny_model(6, num_hidden_layers=4)
    model = copy.deepcopy(teacher)
    prune_heads_(model, 0, [])  # no heads left
    prune_ffn_(model, 2, [])  # no FFN left
    prune_heads_(model, 3, [1, 2])
    drop_layers_(model, [0, 2, 3])
    batch = encode(tok, TEXTS)
    before = _masked_mse(_hidden(model, batch), _hidden(teacher, batch), batch["attention_mask"])
    report = reconstruct_(model, teacher, tok, TEXTS, batch_size=4, quiet=True)
    assert [(e["source"], e["teacher_layer"]) for e in report["layers"]] == [(0, 0), (2, 2), (3, 3)]
    assert report["layers"][0]["attention"] is None and report["layers"][1]["ffn"] is None
    assert report["layers"][2]["attention"]["units"] == 2
    assert _masked_mse(_hidden(model, batch), _hidden(teacher, batch), batch["attention_mask"]) < before
    assert [len(e["heads"]) for e in structure_of(model)["layers"]] == [0, 4, 2]


def _train_quickly(model: torch.nn.Module, tok, data, steps: int = 15) -> torch.nn.Module:  # noqa: ANN001
    """A few full-batch Adam steps, so that the teacher is worth distilling from (plain torch, about a second)."""
    batch = dict(tok(data.texts, padding=True, return_tensors="pt"))
    labels = torch.tensor(data.labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """Tokenizer, train and validation data, and a teacher trained on them."""
    root = tmp_path_factory.mktemp("distill")
    tok = tiny_tokenizer(root / "tok")
    train = load_data(write_tiny_data(root / "train.tsv", 64))
    val = load_data(write_tiny_data(root / "val.tsv", 20))
    torch.manual_seed(0)
    return tok, train, val, _train_quickly(tiny_model(7), tok, train)


def test_distillation_recovery_lowers_validation_loss(tiny_task: tuple, tmp_path: Path) -> None:
    tok, train, val, teacher = tiny_task
    model = copy.deepcopy(teacher)
    prune_by_fraction_(model, heads=0.75, ffn=0.75)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    before = evaluate(model, tok, val)["loss"]
    assert before > evaluate(teacher, tok, val)["loss"]  # pruning hurt
    cfg = PruneConfig(heads=0.75, ffn=0.75, recover="distill", recover_steps=20, lr=2e-3, batch_size=16, seed=0)
    result = distill_(model, copy.deepcopy(teacher), tok, cfg, data=train, work_dir=tmp_path, quiet=True)
    assert result["steps"] == 20 and result["method"] == "full"
    assert evaluate(model, tok, val)["loss"] < 0.7 * before
    assert {n: p.shape for n, p in model.named_parameters()} == shapes


def test_distillation_with_a_peft_method_merges_back(tiny_task: tuple, tmp_path: Path) -> None:
    tok, train, _, teacher = tiny_task
    model = copy.deepcopy(teacher)
    prune_by_fraction_(model, heads=0.5, ffn=0.25)
    prune_heads_(model, 1, [])
    query = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    cfg = PruneConfig(heads=0.5, recover="distill", recover_steps=5, recover_method="lora", lr=1e-2, batch_size=8)
    result = distill_(model, copy.deepcopy(teacher), tok, cfg, data=train, work_dir=tmp_path, quiet=True)
    assert result["method"] == "lora" and 0 < result["trainable"] < sum(p.numel() for p in model.parameters())
    assert only_stock_modules(model) == []
    assert not any("lora" in n for n, _ in model.named_parameters())
    layer0 = model.bert.encoder.layer[0].attention.self.query.weight
    assert layer0.shape == query.shape and not torch.allclose(layer0, query)


def test_bf16_distillation_runs_the_teacher_under_autocast_and_still_recovers(
    tiny_task: tuple, tmp_path: Path
) -> None:
    """precision=bf16: the teacher's forward runs in bfloat16 (its hidden states come out bf16), the loss is float32
    and the pruned model still recovers, its weights float32."""
    tok, train, val, teacher = tiny_task
    model = copy.deepcopy(teacher)
    prune_by_fraction_(model, heads=0.75, ffn=0.75)
    before = evaluate(model, tok, val)["loss"]
    seen: list[torch.dtype] = []
    frozen = copy.deepcopy(teacher)
    frozen.register_forward_hook(lambda _m, _i, out: seen.append(out.logits.dtype))
    cfg = PruneConfig(
        heads=0.75, ffn=0.75, recover="distill", recover_steps=20, lr=2e-3, batch_size=16, seed=0, precision="bf16"
    )
    result = distill_(model, frozen, tok, cfg, data=train, work_dir=tmp_path, quiet=True)
    assert result["steps"] == 20 and seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert evaluate(model, tok, val)["loss"] < 0.7 * before


def test_precision_is_checked_and_auto_is_fp32_on_a_cpu() -> None:
    from compressor.errors import ConfigError
    from compressor.train.config import use_bf16

    with pytest.raises(ConfigError, match="`precision` must be one of fp32, bf16, auto; got 'fp16'"):
        PruneConfig(heads=0.5, precision="fp16")
    assert use_bf16("bf16", "cpu") and not use_bf16("fp32", "cuda") and not use_bf16("auto", "cpu")


def test_the_linear_layerwise_schedule_falls_to_zero_over_the_steps(tiny_task: tuple, tmp_path: Path) -> None:
    """layerwise_schedule=linear: the loop reports each step, so the hidden/attention weights scale from 1 down
    to 1/steps at the last step (0 after it); the run still recovers."""
    from compressor.prune import distill as distill_module

    tok, train, val, teacher = tiny_task
    schedule = distill_module.LayerwiseSchedule("linear")
    assert schedule.scale() == 1.0
    schedule.step(5, 20)
    assert schedule.scale() == pytest.approx(0.75)
    schedule.step(20, 20)
    assert schedule.scale() == 0.0 and distill_module.LayerwiseSchedule("constant").scale() == 1.0

    seen: list[float] = []
    original = distill_module.distillation_loss

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        scale = kwargs["layerwise_scale"]
        inner = original(*args, **kwargs)
        return lambda m, i, o: seen.append(scale()) or inner(m, i, o)

    model = copy.deepcopy(teacher)
    prune_by_fraction_(model, heads=0.5, ffn=0.5)
    before = evaluate(model, tok, val)["loss"]
    cfg = PruneConfig(
        heads=0.5, ffn=0.5, recover="distill", recover_steps=8, lr=2e-3, batch_size=16, seed=0,
        hidden_weight=1.0, attention_weight=1.0, layerwise_schedule="linear",
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distill_module, "distillation_loss", recording)
        distill_(model, copy.deepcopy(teacher), tok, cfg, data=train, work_dir=tmp_path, quiet=True)
    assert seen == pytest.approx([1 - k / 8 for k in range(8)])
    assert evaluate(model, tok, val)["loss"] < before


def test_an_unknown_layerwise_schedule_is_refused() -> None:
    from compressor.errors import ConfigError

    with pytest.raises(ConfigError, match="`layerwise_schedule` must be one of constant, linear; got 'cosine'"):
        PruneConfig(heads=0.5, layerwise_schedule="cosine")


@pytest.mark.parametrize("value", [1.0, -0.1, True, "0.1"])
def test_a_dropout_outside_zero_to_one_is_refused(value: object) -> None:
    from compressor.errors import ConfigError

    with pytest.raises(ConfigError, match=r"`dropout` must be a share in \[0, 1\) \(or unset for the model's own\)"):
        PruneConfig(heads=0.5, dropout=value)


def test_distillation_with_dropout_off_recovers_and_leaves_the_dropout_as_it_was(
    tiny_task: tuple, tmp_path: Path
) -> None:
    """dropout=0: the student trains without dropout (every training forward sees a 0 share) and still recovers;
    the model it returns drops what it did before."""
    tok, train, val, teacher = tiny_task
    model = copy.deepcopy(teacher)
    prune_by_fraction_(model, heads=0.5, ffn=0.5)
    for m in model.modules():  # the tiny config drops nothing; a real BERT drops 0.1
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.1
    shares = sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)})
    assert shares == [0.1]
    seen: set[float] = set()
    hooks = [
        m.register_forward_pre_hook(lambda mod, _: seen.add(mod.p) if mod.training else None)
        for m in model.modules()
        if isinstance(m, torch.nn.Dropout)
    ]
    before = evaluate(model, tok, val)["loss"]
    cfg = PruneConfig(
        heads=0.5, ffn=0.5, recover="distill", recover_steps=8, lr=2e-3, batch_size=16, seed=0, dropout=0
    )
    distill_(model, copy.deepcopy(teacher), tok, cfg, data=train, work_dir=tmp_path, quiet=True)
    for hook in hooks:
        hook.remove()
    assert seen == {0.0}
    assert sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}) == shares
    assert evaluate(model, tok, val)["loss"] < before


@pytest.mark.parametrize("kept", [[], [0]])
def test_an_attention_term_with_no_head_to_match_is_reported(
    tiny_task: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture, kept: list[int]
) -> None:
    """Layers are matched uniformly: a student that kept only the teacher's first layer learns its last one, so
    no kept head meets its own attention map and the attention term is 0; the run says so (and only then)."""
    tok, train, _, teacher = tiny_task
    model = copy.deepcopy(teacher)
    if kept:
        drop_layers_(model, kept)
    cfg = PruneConfig(
        heads=0.5, recover="distill", recover_steps=2, batch_size=16, seed=0, hidden_weight=1.0, attention_weight=1.0
    )
    with caplog.at_level("WARNING", logger="compressor.prune.distill"):
        distill_(model, copy.deepcopy(teacher), tok, cfg, data=train, work_dir=tmp_path, quiet=True)
    warned = [r.getMessage() for r in caplog.records if "adds nothing here" in r.getMessage()]
    assert len(warned) == (1 if kept else 0)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_relation_distillation_recovers_through_any_method_and_leaves_no_hooks(
    tiny_task: tuple, tmp_path: Path, method: str
) -> None:
    """relation_weight on a student with half its heads and neurons: every step adds a positive relation term read
    from the projections of every layer with heads (with LoRA, the wrapped ones that run), the run recovers, and
    no hook is left on either model."""
    from compressor.train import distill as train_distill

    tok, train, val, teacher = tiny_task
    model = copy.deepcopy(teacher)
    prune_by_fraction_(model, heads=0.5, ffn=0.5)
    before = evaluate(model, tok, val)["loss"]
    seen: list[tuple[float, int]] = []
    original = train_distill.relation_loss

    def recording(student, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        term = original(student, *args, **kwargs)
        seen.append((float(term.detach()), len(student)))
        return term

    frozen = copy.deepcopy(teacher)
    cfg = PruneConfig(
        heads=0.5, ffn=0.5, recover="distill", recover_steps=8, lr=2e-3, batch_size=16, seed=0,
        relation_weight=1.0, recover_method=method,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_distill, "relation_loss", recording)
        distill_(model, frozen, tok, cfg, data=train, work_dir=tmp_path, quiet=True)
    layers_with_heads = sum(1 for layer in model.bert.encoder.layer if hasattr(layer.attention, "self"))
    assert len(seen) == 8 and all(term > 0 and taps == 3 * layers_with_heads for term, taps in seen)
    assert evaluate(model, tok, val)["loss"] < before
    assert not any(m._forward_hooks for m in (*model.modules(), *frozen.modules()))


def test_a_negative_relation_weight_is_refused() -> None:
    from compressor.errors import ConfigError

    with pytest.raises(ConfigError, match="`relation_weight` must be zero or positive; got -1.0"):
        PruneConfig(heads=0.5, relation_weight=-1.0)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_distillation_can_end_with_the_weight_average(tiny_task: tuple, tmp_path: Path, method: str) -> None:
    """`ema` reaches the training loop through any recovery method: the checkpoints hold the average of what that
    method trains (LoRA's adapters, merged afterwards), and the run ends with other weights than the last step's."""
    from safetensors.torch import load_file

    from compressor.train.loop import EMA_FILE

    tok, train, val, teacher = tiny_task
    pruned = copy.deepcopy(teacher)
    prune_by_fraction_(pruned, heads=0.75, ffn=0.75)
    before = evaluate(pruned, tok, val)["loss"]
    ends = {}
    for ema in (0.0, 0.5):
        model = copy.deepcopy(pruned)
        cfg = PruneConfig(
            heads=0.75, recover="distill", recover_steps=8, recover_method=method, lr=2e-3, batch_size=16, ema=ema
        )
        distill_(model, copy.deepcopy(teacher), tok, cfg, data=train, work_dir=tmp_path / str(ema), quiet=True)
        ends[ema] = {n: p.detach().clone() for n, p in model.named_parameters()}
        assert only_stock_modules(model) == []
        assert evaluate(model, tok, val)["loss"] < before
    saved = sorted((tmp_path / "0.5" / "checkpoints").glob(f"checkpoint-*/{EMA_FILE}"))
    assert saved, "the checkpoint holds no weight average"
    names = list(load_file(str(saved[-1])))
    assert names and any("lora" in n for n in names) == (method == "lora")
    assert not (tmp_path / "0.0" / "checkpoints" / "checkpoint-8" / EMA_FILE).exists()
    assert any(not torch.allclose(ends[0.0][n], ends[0.5][n]) for n in ends[0.0])


def _flipped(data):  # noqa: ANN001, ANN202
    import dataclasses

    return dataclasses.replace(data, labels=[1 - label for label in data.labels])


def _distilled(teacher, tok, data, tmp_path: Path, label_weight: float) -> dict[str, torch.Tensor]:  # noqa: ANN001
    model = copy.deepcopy(teacher)
    prune_by_fraction_(model, heads=0.5, ffn=0.5)
    settings = {"recover": "distill", "recover_steps": 6, "lr": 2e-3, "batch_size": 16, "seed": 0}
    cfg = PruneConfig(heads=0.5, ffn=0.5, label_weight=label_weight, **settings)
    distill_(model, copy.deepcopy(teacher), tok, cfg, data=data, work_dir=tmp_path, quiet=True)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_with_label_weight_zero_the_labels_do_not_move_the_student(tiny_task: tuple, tmp_path: Path) -> None:
    """label_weight 0: the student learns from the teacher alone, so every label flipped gives the same weights;
    with the default weight 1 the flipped labels pull it elsewhere (what makes the first check able to fail)."""
    tok, train, _, teacher = tiny_task
    runs = {}
    for weight in (0.0, 1.0):
        for flip in (False, True):
            data = _flipped(train) if flip else train
            runs[(weight, flip)] = _distilled(teacher, tok, data, tmp_path / f"{weight}{flip}", weight)
    for name, value in runs[(0.0, False)].items():
        torch.testing.assert_close(runs[(0.0, True)][name], value, rtol=0, atol=1e-6)
    moved = max(float((runs[(1.0, True)][n] - v).abs().max()) for n, v in runs[(1.0, False)].items())
    assert moved > 1e-4


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"label_weight": -1.0}, "`label_weight` must be zero or positive; got -1.0"),
        ({"label_weight": "0"}, "`label_weight` must be zero or positive; got '0'"),
        ({"label_weight": 0, "distill_weight": 0.0}, "leaves the distillation nothing to learn from"),
        ({"hidden_weight": "1"}, "`hidden_weight` must be zero or positive; got '1'"),  # not a TypeError
    ],
)
def test_a_label_weight_that_cannot_train_is_refused(values: dict, message: str) -> None:
    from compressor.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        PruneConfig(heads=0.5, recover="distill", recover_steps=4, **values)


def test_the_layer_map_setting_reaches_the_distillation(tiny_task: tuple, tmp_path: Path) -> None:
    """layer_map=source: a student that kept the first of the teacher's two layers learns that layer (uniform: the
    teacher's last), and the distillation's loss is built with that map; an unknown map is refused."""
    from compressor.arch.surgery import drop_layers_
    from compressor.errors import ConfigError
    from compressor.prune import distill as distill_module

    tok, train, _, teacher = tiny_task
    maps: list[list[int]] = []
    original = distill_module.distillation_loss

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        maps.append(kwargs["layer_map"].layers)
        return original(*args, **kwargs)

    model = copy.deepcopy(teacher)
    drop_layers_(model, [0])
    cfg = PruneConfig(
        recover="distill", recover_steps=2, batch_size=16, seed=0, hidden_weight=1.0, attention_weight=1.0,
        layer_map="source",
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distill_module, "distillation_loss", recording)
        distill_(model, copy.deepcopy(teacher), tok, cfg, data=train, work_dir=tmp_path / "source", quiet=True)
        uniform = replace(cfg, layer_map="uniform")
        distill_(model, copy.deepcopy(teacher), tok, uniform, data=train, work_dir=tmp_path / "uniform", quiet=True)
    assert maps == [[0], [1]]
    with pytest.raises(ConfigError, match="`layer_map` must be one of uniform, source; got 'nearest'"):
        PruneConfig(heads=0.5, layer_map="nearest")
