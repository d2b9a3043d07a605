"""Every supported model family through every stage, one row per family (`tests.families.FAMILIES`).

Per family: all fine-tuning methods inject → merge exactly; every sensitivity scorer scores heads and neurons;
surgery (heads incl. a layer left with none, FFN incl. none, dropped layers, hidden width) equals masking and
round-trips through save → load; ONNX fp32 parity, the int8 gate, `compressor predict` on the artifact and
optimum's ORTModelForSequenceClassification loading it. The README's family × stage table cites these tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compressor.arch.parts import model_inputs
from compressor.arch.structure import structure_of
from compressor.arch.surgery import drop_layers_, prune_ffn_, prune_heads_, prune_hidden_
from compressor.arch.table import ARCHS
from compressor.checkpoint import load_model, save_model
from compressor.data import load_data
from compressor.errors import ConfigError, PruneError
from compressor.methods import METHODS
from compressor.methods.base import only_stock_modules, trainable_parameters
from compressor.schema import build_config
from compressor.sensitivity.analyse import analyse
from compressor.sensitivity.config import AnalyseConfig
from compressor.sensitivity.masks import UnitMasks, make_batches
from compressor.sensitivity.scorers import SCORERS, run_scorer
from exporters.onnx.specs import EXPORT_SPECS
from tests.families import FAMILIES, family_model, family_tokenizer, save_family_checkpoint
from tests.models import NEGATIVE, POSITIVE, write_tiny_data

NAMES = sorted(FAMILIES)
TEXTS = [*POSITIVE, *NEGATIVE]
PAIRS = ["so good"] * 5 + ["so terrible"] * 5
METHOD_CASES = {  # tiny settings per method (as tests/compressor/methods/test_matrix.py)
    "full": {},
    "lora": {"rank": 2},
    "dsee": {"rank": 2, "support_size": 4},
    "pafi": {"fraction": 0.01},
    "hiwi": {"bottleneck": 4},
    "adamix": {"rank": 2},  # the default expert form and count (the AdaMix config is changing: see its tests)
    "pruning-adapter": {"rank": 2, "high_rank": 4, "examples": 16, "batch_size": 8},
}


def test_the_table_covers_every_registered_family() -> None:
    assert {f.model_type for f in FAMILIES.values()} == set(ARCHS.names()) == set(EXPORT_SPECS.names())
    assert set(METHOD_CASES) == set(METHODS.names())
    assert len(NAMES) >= 7  # the parametrisations below are not empty


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tokenizers")
    return {name: family_tokenizer(name, root / name) for name in NAMES}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("data") / "train.tsv", 16)


def encode(model: torch.nn.Module, tokenizer, pairs: bool = False) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """A padded batch of real sentences (and pairs), keeping only the inputs the model reads."""
    enc = tokenizer(TEXTS, PAIRS if pairs else None, padding=True, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in model_inputs(model)}


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("family", NAMES)
def test_the_family_reads_the_declared_inputs(family: str, tokenizers: dict) -> None:
    model = family_model(family, tokenizers[family])
    assert model_inputs(model) == FAMILIES[family].inputs
    assert EXPORT_SPECS.get(FAMILIES[family].model_type).for_config(model.config).inputs == FAMILIES[family].inputs


@pytest.mark.parametrize("method", sorted(METHOD_CASES))
@pytest.mark.parametrize("family", NAMES)
def test_every_method_merges_exactly(family: str, method: str, tokenizers: dict, data_file: Path) -> None:
    tokenizer = tokenizers[family]
    spec = METHODS.get(method)
    cfg = build_config(spec.config_cls, METHOD_CASES[method])
    model = family_model(family, tokenizer)
    if spec.prepare is not None:
        spec.prepare(model, cfg, load_data(data_file), tokenizer)
    batch = encode(model, tokenizer, pairs=True)
    plain = logits(model, batch)
    model = spec.inject(model, cfg)
    trainable = trainable_parameters(model)
    head = [n for n in trainable if any(p in n for p in ARCHS.get(FAMILIES[family].model_type).head_modules())]
    assert head, "the task head must train in every method"
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # zero-initialised adapters would pass any merge check
        for p in trainable.values():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    trained = logits(model, batch)
    assert not torch.allclose(trained, plain, atol=1e-3)
    merged = spec.merge_(model)
    assert only_stock_modules(merged) == []
    torch.testing.assert_close(logits(merged, batch), trained, atol=1e-4, rtol=1e-4)


def _pruned(family: str, tokenizer, seed: int = 1):  # noqa: ANN001, ANN202
    """Three layers: 2 heads + 3 neurons, no heads + 3 neurons, all heads + no FFN."""
    model = family_model(family, tokenizer, seed, **{ARCHS.get(FAMILIES[family].model_type).layers_key: 3})
    prune_heads_(model, 0, [1, 3])
    prune_heads_(model, 1, [])
    prune_ffn_(model, 0, [0, 5, 36])
    prune_ffn_(model, 1, [2, 4, 8])
    prune_ffn_(model, 2, [])
    return model


@pytest.mark.parametrize("family", NAMES)
def test_every_scorer_scores_heads_and_neurons(family: str, tokenizers: dict, data_file: Path) -> None:
    tokenizer = tokenizers[family]
    model = _pruned(family, tokenizer)
    batches = make_batches(
        tokenizer, load_data(data_file), samples=8, seq_len=32, batch_size=8, inputs=model_inputs(model)
    )
    assert set(batches[0]) == {*model_inputs(model), "labels"}
    for name in SCORERS.names():
        scores = run_scorer(name, model, batches, AnalyseConfig(samples=8, batch_size=8))
        assert [len(h) for h in scores.heads] == [2, 0, 4], name
        assert [len(n) for n in scores.neurons] == [3, 3, 0], name
        assert all(torch.isfinite(s).all() for s in scores.heads + scores.neurons), name
        assert len(scores.tensors) == 6 + 2 + 4, name  # layer 1 has no q/k/v/o, layer 2 no FFN linears


@pytest.mark.parametrize("family", NAMES)
def test_the_latency_probes_build_and_take_the_family_inputs(family: str, tokenizers: dict) -> None:
    from compressor.sensitivity.latency import _feed, _probe_model

    model = family_model(family, tokenizers[family])
    for layers, heads, neurons in ((1, 0, 0), (2, 2, 5)):
        probe = _probe_model(model, layers, heads, neurons)
        feed = _feed(probe, 16)
        assert tuple(feed) == FAMILIES[family].inputs
        assert [(len(e["heads"]), e["intermediate"]) for e in structure_of(probe)["layers"]] == [(heads, neurons)] * (
            layers
        )
        out = logits(probe, {k: torch.from_numpy(v) for k, v in feed.items()})
        assert out.shape == (1, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("family", NAMES)
def test_surgery_equals_masking_and_round_trips(family: str, tokenizers: dict, tmp_path: Path) -> None:
    tokenizer = tokenizers[family]
    reference = family_model(family, tokenizer, 1, **{ARCHS.get(FAMILIES[family].model_type).layers_key: 3})
    batch = encode(reference, tokenizer, pairs=True)
    # the same removals as `_pruned`, as masks on the unpruned model (hooks on the o / FFN-out inputs)
    with UnitMasks(reference) as masks:
        masks.reset(len(TEXTS), requires_grad=False)
        masks.layers[0].heads[:, [0, 2]] = 0
        masks.layers[1].heads[:] = 0
        masks.layers[0].neurons[:, [i for i in range(37) if i not in (0, 5, 36)]] = 0
        masks.layers[1].neurons[:, [i for i in range(37) if i not in (2, 4, 8)]] = 0
        masks.layers[2].neurons[:] = 0
        masked = logits(reference, batch)
    model = _pruned(family, tokenizer)
    torch.testing.assert_close(logits(model, batch), masked, atol=1e-5, rtol=1e-5)
    assert [(len(e["heads"]), e["intermediate"]) for e in structure_of(model)["layers"]] == [(2, 3), (0, 3), (4, 0)]

    drop_layers_(model, [1, 2])
    assert ARCHS.get(FAMILIES[family].model_type).num_layers(model.config) == 2
    pruned = logits(model, batch)
    save_model(model, tokenizer, tmp_path / "pruned")
    loaded, _ = load_model(tmp_path / "pruned")
    torch.testing.assert_close(logits(loaded, batch), pruned, atol=0, rtol=0)
    assert structure_of(loaded) == structure_of(model)


@pytest.mark.parametrize("family", NAMES)
def test_width_pruning_round_trips_or_refuses(family: str, tokenizers: dict, tmp_path: Path) -> None:
    tokenizer = tokenizers[family]
    model = _pruned(family, tokenizer)
    keep = list(range(0, 32, 2)) + [1, 3]
    if not FAMILIES[family].width:
        with pytest.raises(
            PruneError, match=f"hidden-width pruning is not supported for {FAMILIES[family].model_type}"
        ):
            prune_hidden_(model, keep)
        with pytest.raises(ConfigError, match="width pruning is not supported"):  # refused before any scoring
            analyse(model, AnalyseConfig(scorer="magnitude", hidden=0.5))
        return
    prune_hidden_(model, keep)
    batch = encode(model, tokenizer)
    widths = {p.shape[-1] for n, p in model.named_parameters() if "LayerNorm" in n or "layer_norm" in n}
    assert len(keep) in widths
    width_pruned = logits(model, batch)
    assert torch.isfinite(width_pruned).all()
    save_model(model, tokenizer, tmp_path / "narrow")
    loaded, _ = load_model(tmp_path / "narrow")
    torch.testing.assert_close(logits(loaded, batch), width_pruned, atol=0, rtol=0)


@pytest.mark.parametrize("family", NAMES)
def test_pruned_family_exports_predicts_and_loads_in_optimum(
    family: str, tokenizers: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from optimum.onnxruntime import ORTModelForSequenceClassification

    from cli.main import main
    from exporters.onnx.config import ExportConfig
    from exporters.onnx.export import export_onnx, spec_for, torch_to_onnx, trace_feed
    from exporters.onnx.sessions import make_session
    from exporters.runtime import Runtime

    tokenizer = tokenizers[family]
    model = _pruned(family, tokenizer, seed=2)
    drop_layers_(model, [0, 1])
    data = load_data(write_tiny_data(tmp_path / "eval.tsv", 20))
    fuse = "auto" if FAMILIES[family].fusion else "off"
    config = ExportConfig(max_length=64, seq_len=32, timing_runs=3, reduce_range=False, fuse=fuse, quantize="dynamic")
    report = export_onnx(model, config, tokenizer=tokenizer, out_dir=tmp_path / "artifact", eval_data=data)
    assert report.parity_max_abs_diff <= 1e-4  # fp32 graph vs PyTorch, checked before int8
    fusion = report.manifest["fusion"]
    if FAMILIES[family].fusion:  # ORT fused what the family's spec says it fuses, and the fused graph has parity
        assert fusion["fused_op_problems"] == [] and fusion["fused_parity"] <= 1e-4, fusion
    else:
        assert "unavailable" in fusion and "fused" not in fusion["timings_ms"]
    assert report.agreement is not None and report.agreement >= 0.99  # the int8 gate passed (or fell back op by op)
    assert report.manifest["inputs"] == list(FAMILIES[family].inputs)

    runtime = Runtime(report.out_dir)
    assert runtime.input_names == list(FAMILIES[family].inputs)
    ort_logits = runtime.logits(TEXTS)

    # the fp32 graph at other batch sizes and lengths than the traced ones (relative positions, position offsets)
    spec = spec_for(model)
    torch_to_onnx(model, trace_feed(tokenizer, spec), spec, tmp_path / "fp32.onnx", opset=spec.opset)
    session = make_session(tmp_path / "fp32.onnx")
    for texts in ([TEXTS[0]], [" ".join(TEXTS * 3), TEXTS[1]], TEXTS):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in enc.items() if k in spec.inputs}
        expected = logits(model, {k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
        np.testing.assert_allclose(session.run(None, feed)[0], expected, atol=1e-4, rtol=0)

    monkeypatch.setattr(sys, "argv", ["compressor", "predict", str(report.out_dir), *TEXTS[:2], "--quiet"])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    assert (exc.value.code or 0) == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["label"] for r in lines] == [r["label"] for r in runtime.predict(TEXTS[:2])]
    assert {r["label"] for r in lines} <= {"negative", "positive"}

    optimum_model = ORTModelForSequenceClassification.from_pretrained(report.out_dir)
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    optimum_logits = optimum_model(**{k: v for k, v in enc.items() if k in runtime.input_names}).logits
    np.testing.assert_allclose(np.asarray(optimum_logits), ort_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "command",
    [
        ["prune", "{model}", "--heads", "0.5", "--out", "{out}"],
        ["analyse", "{model}", "--scorer", "magnitude", "--out", "{out}"],
        ["finetune", "{model}", "--data", "{data}", "--method", "lora", "--out", "{out}"],
        ["export", "{model}", "--out", "{out}"],
        ["inspect", "{model}"],
    ],
    ids=lambda c: c[0],
)
def test_an_unsupported_model_type_names_the_supported_ones(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from cli.main import main

    checkpoint = save_family_checkpoint("bert", tmp_path / "model")
    config = json.loads((checkpoint / "config.json").read_text())
    config["model_type"] = "gpt2"
    (checkpoint / "config.json").write_text(json.dumps(config))
    paths = {"model": checkpoint, "out": tmp_path / "out", "data": write_tiny_data(tmp_path / "train.tsv", 8)}
    monkeypatch.setattr(sys, "argv", ["compressor", *[arg.format(**paths) for arg in command]])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "model type `gpt2` is not supported; supported: " in lines[0], err
    assert all(name in lines[0] for name in ARCHS.names())
    assert "Traceback" not in err
