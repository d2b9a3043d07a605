from __future__ import annotations

import json
import os
from collections import namedtuple
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import exporters.onnx.export as export_module
import exporters.onnx.validate as validate_module
from compressor.arch.structure import structure_of
from compressor.arch.surgery import drop_layers_, prune_ffn_, prune_heads_
from compressor.errors import ConfigError, ExportError, ParityError
from compressor.prune.vocab import prune_vocab_
from exporters.manifest import read_manifest, verify_artifact
from exporters.onnx.export import choose_graph, export_onnx
from exporters.onnx.optimize import expected_fused_ops
from exporters.onnx.sessions import make_session
from tests.exporters.onnx.conftest import fast_config
from tests.models import tiny_model

TEXTS = ["a great movie", "i hated this film and the plot was so dull", "lovely", "not very good but fun"]


def _torch_logits(model, tokenizer, texts):
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()


def _onnx_logits(path: Path, tokenizer, texts):
    session = make_session(path)
    enc = tokenizer(texts, padding=True, return_tensors="np")
    return session.run(None, {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]


@pytest.fixture(scope="module")
def fp32_artifact(tmp_path_factory, tokenizer):
    model = tiny_model(1)
    model.train()  # the verb must export in eval mode and hand the model back as it was
    out = tmp_path_factory.mktemp("fp32") / "artifact"
    report = export_onnx(model, fast_config(quantize="none", fuse="off"), tokenizer=tokenizer, out_dir=out)
    training_after = model.training
    model.eval()
    return model, report, training_after


def test_fp32_export_matches_pytorch_with_dynamic_batch_and_sequence(fp32_artifact, tokenizer) -> None:
    model, report, _ = fp32_artifact
    assert report.parity_max_abs_diff <= 1e-4
    for texts in (TEXTS, TEXTS[:1], TEXTS * 3):  # batch 4, 1, 12 and their own sequence lengths
        np.testing.assert_allclose(
            _onnx_logits(report.out_dir / "model.onnx", tokenizer, texts),
            _torch_logits(model, tokenizer, texts),
            atol=1e-4,
            rtol=0,
        )


def test_artifact_directory_holds_model_config_tokenizer_and_a_verified_manifest(fp32_artifact) -> None:
    model, report, _ = fp32_artifact
    files = {p.name for p in report.out_dir.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "compressor.json"} <= files
    assert not [name for name in files if name.startswith(".")]  # no work files left behind
    manifest = verify_artifact(report.out_dir)  # sha256 of model.onnx matches
    assert manifest["opset"] == 17 and manifest["max_length"] == 64
    assert manifest["quantization"] == {"mode": "none"}
    assert manifest["params"]["total"] == sum(p.numel() for p in model.parameters())
    assert manifest["stages"][-1]["stage"] == "export"
    assert manifest["stages"][-1]["config"]["fields"]["quantize"] == "none"
    assert manifest["toolchain"]["onnxruntime"] and manifest["toolchain"]["torch"]
    assert manifest["latency"]["p50_ms"] > 0
    graph = onnx.load(str(report.out_dir / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    config = json.loads((report.out_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert len(config["compressor_structure"]["layers"]) == 2


def test_export_leaves_the_callers_model_as_it_was(fp32_artifact) -> None:
    model, _, training_after = fp32_artifact
    assert training_after  # it was in train mode before the export
    assert getattr(model.config, "compressor_structure", None) is None


def test_optimum_loads_the_artifact_and_gives_the_same_logits(fp32_artifact, tokenizer) -> None:
    from optimum.onnxruntime import ORTModelForSequenceClassification

    model, report, _ = fp32_artifact
    ort_model = ORTModelForSequenceClassification.from_pretrained(report.out_dir)
    logits = ort_model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    np.testing.assert_allclose(np.asarray(logits), _torch_logits(model, tokenizer, TEXTS), atol=1e-4, rtol=0)
    assert ort_model.config.id2label == {0: "negative", 1: "positive"}


def _pruned_model():
    model = tiny_model(2, num_hidden_layers=4)
    prune_heads_(model, 0, [1, 3])
    prune_heads_(model, 1, [])  # a layer with 0 heads
    prune_ffn_(model, 0, [2, 5, 7])
    prune_ffn_(model, 2, [])  # a layer with 0 FFN neurons
    drop_layers_(model, [0, 1, 2])  # a dropped layer
    return model


def test_pruned_model_exports_with_parity_and_complete_fusion(tokenizer, out_dir) -> None:
    model = _pruned_model()
    keep = tokenizer.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]", "a", "great", "movie", "i", "hated"])
    prune_vocab_(model, keep, tokenizer.unk_token_id)  # a pruned vocabulary: other words map to [UNK]'s row
    report = export_onnx(model, fast_config(quantize="none", fuse="on"), tokenizer=tokenizer, out_dir=out_dir)
    # --fuse on: the fused graph, or its form with unfused residual norms when that is faster (timed at --threads
    # and at 1 thread when there are two candidates; one candidate is not timed against anything)
    by_threads = report.manifest["fusion"]["timings_ms_by_threads"]
    candidates = set(by_threads["2"])
    assert "fused" in candidates and candidates <= {"fused", "fused+sum-norms"}
    assert list(by_threads) == (["2"] if len(candidates) == 1 else ["1", "2"])
    assert report.fusion_choice in candidates
    np.testing.assert_allclose(
        _onnx_logits(out_dir / "model.onnx", tokenizer, TEXTS), _torch_logits(model, tokenizer, TEXTS), atol=1e-4
    )
    fusion = report.manifest["fusion"]
    assert fusion["fused_op_problems"] == []
    assert fusion["expected_fused_ops"] == {"attention": 2, "gelu": 2, "skip_layer_norm": 4}
    assert fusion["expected_fused_ops"] == expected_fused_ops(structure_of(model))
    assert report.manifest["structure"]["vocab"] == {"source_size": tokenizer.vocab_size, "kept": len(keep) + 1}


def test_sparse_vocabulary_exports_int8_with_its_codes_as_stored(tokenizer, out_dir) -> None:
    model = tiny_model(3)
    keep = tokenizer.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]", "a", "great", "movie", "i", "hated", "film"])
    prune_vocab_(model, keep, tokenizer.unk_token_id, fallback="sparse", codes=4)  # other words: 4 kept rows each
    report = export_onnx(model, fast_config(fuse="off"), tokenizer=tokenizer, out_dir=out_dir)
    assert report.parity_max_abs_diff <= 1e-4  # the fp32 graph, sparse lookup included, against torch
    assert report.manifest["structure"]["vocab"] == {"source_size": tokenizer.vocab_size, "kept": 10, "codes": 4}
    graph = onnx.load(str(out_dir / "model.onnx")).graph
    shapes = {(tuple(i.dims), i.data_type) for i in graph.initializer}
    # the export form (CodedLookup): codes for the dropped ids only, the int8 graph keeping them as they are, and
    # one id map (a kept row, or -1 - the dropped id's code slot)
    dropped = tokenizer.vocab_size - 10
    assert {((dropped, 4), onnx.TensorProto.INT16), ((dropped, 4), onnx.TensorProto.FLOAT16)} <= shapes
    assert ((tokenizer.vocab_size,), onnx.TensorProto.INT32) in shapes
    assert not any(dims == (tokenizer.vocab_size, 4) for dims, _ in shapes)
    ops = [n.op_type for n in graph.node]
    assert "MatMulInteger" in ops and "NonZero" in ops and "ScatterND" in ops
    # one lookup of the (int8) table of 10 kept rows serves the kept and the mixed ids
    tables = {i.name for i in graph.initializer if len(i.dims) == 2 and i.dims[0] == 10}
    assert sum(bool(n.input) and n.input[0] in tables for n in graph.node) == 1
    kept_only = ["a great movie", "i hated a film"]  # no id to mix: NonZero finds nothing
    for texts in (TEXTS, kept_only):
        np.testing.assert_allclose(
            _onnx_logits(out_dir / "model.onnx", tokenizer, texts), _torch_logits(model, tokenizer, texts), atol=1e-2
        )


def test_parity_failure_raises_with_the_measured_value_and_leaves_no_directory(
    tokenizer, out_dir, monkeypatch
) -> None:
    real = validate_module.torch_logits
    monkeypatch.setattr(validate_module, "torch_logits", lambda model, feeds: real(model, feeds) + 0.25)
    with pytest.raises(ParityError, match=r"max \|Δlogit\| = 0\.25"):
        export_onnx(tiny_model(), fast_config(quantize="none", fuse="off"), tokenizer=tokenizer, out_dir=out_dir)
    assert not out_dir.exists()
    assert os.listdir(out_dir.parent) == []  # no temporary sibling left either


def test_failed_export_keeps_the_previous_artifact(tokenizer, out_dir, monkeypatch) -> None:
    out_dir.mkdir()
    (out_dir / "previous.txt").write_text("kept")
    monkeypatch.setattr(validate_module, "max_abs_diff", lambda a, b: 1.0)
    with pytest.raises(ParityError):
        export_onnx(tiny_model(), fast_config(quantize="none", fuse="off"), tokenizer=tokenizer, out_dir=out_dir)
    assert [p.name for p in out_dir.iterdir()] == ["previous.txt"]


@pytest.mark.parametrize(
    ("p50_by_threads", "expected"),
    [
        ({1: {"plain": 10.0, "fused": 9.0}, 2: {"plain": 6.0, "fused": 5.5}}, "fused"),  # faster at both
        ({1: {"plain": 10.8, "fused": 11.9}, 2: {"plain": 15.3, "fused": 14.3}}, "plain"),  # slower at 1 thread
        ({1: {"plain": 10.0, "fused": 9.8}}, "plain"),  # 2 % faster: within the noise, the portable graph stays
        ({1: {"plain": 10.0, "fused": 9.7}}, "fused"),  # 3 % faster
        ({1: {"fused": 12.0}, 2: {"fused": 8.0}}, "fused"),  # --fuse on: the only candidate
        ({1: {"plain": 12.0}}, "plain"),
        # the unfused-norm forms compete like any graph: at least 3 % faster than plain at every thread count, then
        # the fastest at the fewest threads
        (
            {
                1: {"plain": 10.0, "fused": 9.0, "plain+sum-norms": 8.0},
                2: {"plain": 6, "fused": 5.5, "plain+sum-norms": 5},
            },
            "plain+sum-norms",
        ),
        (
            {
                1: {"plain": 10.0, "fused": 9.0, "plain+sum-norms": 8.0},
                2: {"plain": 6, "fused": 5.5, "plain+sum-norms": 6},
            },
            "fused",
        ),
        (
            {1: {"fused": 10.0, "fused+sum-norms": 9.8}, 2: {"fused": 6.0, "fused+sum-norms": 5.0}},
            "fused",
        ),  # --fuse on
        ({1: {"fused": 10.0, "fused+sum-norms": 9.0}, 2: {"fused": 6.0, "fused+sum-norms": 5.0}}, "fused+sum-norms"),
    ],
)
def test_choose_graph_keeps_fusion_only_when_faster_at_every_thread_count(p50_by_threads, expected) -> None:
    assert choose_graph(p50_by_threads) == expected


def test_auto_fusion_times_both_graphs_and_keeps_the_faster(tokenizer, sentences, out_dir) -> None:
    report = export_onnx(
        tiny_model(), fast_config(fuse="auto"), tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences
    )
    fusion = report.manifest["fusion"]
    # plain, fused, and the plain graph with its residual norms written as Sum (ORT fused every norm of the fused one)
    assert set(fusion["timings_ms"]) == {"plain", "plain+sum-norms", "fused"}
    by_threads = fusion["timings_ms_by_threads"]
    assert set(by_threads) == {"1", "2"} and by_threads["2"] == fusion["timings_ms"]  # --threads 2 and 1 thread
    assert fusion["choice"] == choose_graph({int(t): v for t, v in by_threads.items()}) == report.fusion_choice
    assert fusion["timed"] == "final graphs (dynamic)"
    gate = report.manifest["quantization"]["gate"]
    assert gate["passed"] and gate["agreement"] >= 0.99 and gate["excluded_nodes"] == []
    assert gate["samples"] == len(sentences)
    ops = {n.op_type for n in onnx.load(str(out_dir / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops or "QAttention" in ops  # the kept graph is the int8 one


def test_labelled_eval_data_gives_accuracy(tokenizer, tmp_path, out_dir) -> None:
    from compressor.data import load_data
    from tests.models import write_tiny_data

    data = load_data(write_tiny_data(tmp_path / "eval.tsv", 20))
    report = export_onnx(tiny_model(), fast_config(fuse="off"), tokenizer=tokenizer, out_dir=out_dir, eval_data=data)
    accuracy = read_manifest(out_dir)["accuracy"]
    assert accuracy["samples"] == 20 and 0.0 <= accuracy["final"] <= 1.0
    assert report.accuracy == accuracy


def test_not_enough_disk_space_fails_before_any_work(tokenizer, out_dir, monkeypatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(export_module.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(ExportError, match="MB free"):
        export_onnx(tiny_model(), fast_config(), tokenizer=tokenizer, out_dir=out_dir)
    assert not out_dir.exists()


def test_max_length_beyond_the_models_positions_is_a_config_error(tokenizer, out_dir) -> None:
    with pytest.raises(ConfigError, match="max_length"):
        export_onnx(tiny_model(), fast_config(max_length=128), tokenizer=tokenizer, out_dir=out_dir)


def test_gate_accuracy_is_what_the_runtime_measures_one_sentence_at_a_time(tokenizer, tmp_path, out_dir) -> None:
    # Dynamic int8 scales activations per run, so padding changes results; the gate scores one unpadded sentence
    # per run, as `compressor benchmark` (and an edge device at batch 1) does, so both report the same accuracy.
    from compressor.data import load_data
    from exporters.measure import evaluate
    from exporters.runtime import Runtime
    from tests.models import write_tiny_data

    data = load_data(write_tiny_data(tmp_path / "eval.tsv", 24))
    config = fast_config(fuse="off", gate=0.5)
    assert config.eval_batch == 1
    report = export_onnx(tiny_model(), config, tokenizer=tokenizer, out_dir=out_dir, eval_data=data)
    assert report.accuracy is not None and report.accuracy["samples"] == 24
    assert evaluate(Runtime(out_dir, threads=1), data) == pytest.approx(report.accuracy["final"])


@pytest.mark.parametrize(("decode", "lookup_node"), [("lookup", "gather_bytes"), ("load", "lookup")])
def test_sparse_vocabulary_with_int4_embeddings_loads_in_optimum_and_our_runtime(
    tokenizer, out_dir, decode, lookup_node
) -> None:
    from optimum.onnxruntime import ORTModelForSequenceClassification

    from exporters.runtime import Runtime

    model = tiny_model(3, vocab_size=512)  # a table wide enough that int4 pays (the tiny vocabulary + unused ids)
    keep = tokenizer.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]", "a", "great", "movie", "i", "hated", "film"])
    prune_vocab_(model, keep, tokenizer.unk_token_id, fallback="sparse", codes=4)
    config = fast_config(fuse="off", embedding_bits=4, gate=0.5, embedding_decode=decode)
    report = export_onnx(model, config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=TEXTS * 8)
    graph = onnx.load(str(out_dir / "model.onnx")).graph
    assert {"GatherElements", "MatMulInteger", "ScatterND"} <= {n.op_type for n in graph.node}
    assert any(n.name.endswith(f"_int4/{lookup_node}") for n in graph.node)  # the int4 lookup of the kept rows
    assert report.manifest["opset"] == 17  # standard ops only: no opset 21 for the int4 type
    ours = Runtime(out_dir, threads=1).logits(TEXTS)
    theirs = ORTModelForSequenceClassification.from_pretrained(report.out_dir)(
        **tokenizer(TEXTS, padding=True, return_tensors="pt")
    ).logits
    np.testing.assert_allclose(np.asarray(theirs), ours, atol=1e-4)
    np.testing.assert_allclose(ours, _torch_logits(model, tokenizer, TEXTS), atol=0.1)  # int8 + int4 rounding
