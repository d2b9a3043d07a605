from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import exporters.onnx.quantize as quantize_module
from compressor.errors import ExportError
from exporters.onnx.export import export_onnx, torch_to_onnx, trace_feed
from exporters.onnx.quantize import QuantSettings, quantize_graph, quantized_nodes
from exporters.onnx.specs import EXPORT_SPECS
from tests.exporters.onnx.conftest import fast_config
from tests.models import tiny_model

POOLER = "/bert/pooler/dense/Gemm"


def _outlier_model() -> torch.nn.Module:
    """Wide enough weights that predictions vary by input; one outlier in the pooler.

    With per-tensor int8 the outlier sets the pooler's scale so that every other pooler weight rounds to
    zero: int8 predictions collapse while fp32 ones do not.
    """
    model = tiny_model(0, initializer_range=0.5)
    with torch.no_grad():
        model.bert.pooler.dense.weight[5, 3] = 200.0
    return model


def test_gate_keeps_the_outlier_node_in_fp32_until_predictions_agree(tokenizer, sentences, out_dir) -> None:
    config = fast_config(fuse="off", gate=0.9, per_channel=False)  # per-tensor only: exclusion must do the work
    report = export_onnx(_outlier_model(), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences)
    gate = report.manifest["quantization"]["gate"]
    assert gate["initial_agreement"] < 0.9 <= gate["agreement"] == report.agreement
    assert [t["per_channel"] for t in gate["tried"]] == [False]
    assert report.excluded_nodes[0] == POOLER  # ranked first by the error it adds
    assert gate["excluded_nodes"] == report.excluded_nodes
    assert gate["ranking"][0]["node"] == POOLER
    names = {n.name for n in onnx.load(str(out_dir / "model.onnx")).graph.node}
    assert not any(name.startswith(POOLER) and name.endswith("_quant") for name in names)  # stayed fp32
    assert any(name.endswith("_quant") for name in names)  # the rest is still int8


def test_unset_per_channel_is_tried_before_excluding_nodes(tokenizer, sentences, out_dir) -> None:
    config = fast_config(fuse="off", gate=0.9)  # per_channel unset: per-tensor first, per-channel if the gate needs it
    report = export_onnx(_outlier_model(), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences)
    quant = report.manifest["quantization"]
    tried = quant["gate"]["tried"]
    assert [t["per_channel"] for t in tried] == [False, True]
    assert tried[0]["agreement"] < 0.9
    assert quant["per_channel_choice"] == "auto"
    assert quant["per_channel"] == (tried[1]["agreement"] >= tried[0]["agreement"])
    assert quant["gate"]["agreement"] >= 0.9


def test_excluding_a_gemm_keeps_it_fp32(tokenizer, tmp_path: Path) -> None:
    fp32 = tmp_path / "model.onnx"
    spec = EXPORT_SPECS.get("bert")
    torch_to_onnx(tiny_model(), trace_feed(tokenizer, spec), spec, fp32, opset=17)
    settings = QuantSettings("dynamic", per_channel=False, reduce_range=False)
    quantize_graph(fp32, tmp_path / "all.onnx", settings)
    quantize_graph(fp32, tmp_path / "kept.onnx", settings, exclude=["/classifier/Gemm"])
    source = onnx.load(str(fp32))
    assert "/classifier/Gemm" in quantized_nodes(source, onnx.load(str(tmp_path / "all.onnx")))
    kept = quantized_nodes(source, onnx.load(str(tmp_path / "kept.onnx")))
    assert "/classifier/Gemm" not in kept and POOLER in kept


def test_unreachable_gate_is_an_error(tokenizer, sentences, out_dir, monkeypatch) -> None:
    monkeypatch.setattr(quantize_module, "agreement", lambda reference, logits: 0.5)
    with pytest.raises(ExportError, match="below the gate 0.99"):
        export_onnx(
            tiny_model(), fast_config(fuse="off"), tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences
        )
    assert not out_dir.exists()


def test_static_int8_runs_with_calibration(tokenizer, sentences, out_dir) -> None:
    config = fast_config(quantize="static", fuse="off", per_channel=True)
    report = export_onnx(tiny_model(), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences)
    quantization = report.manifest["quantization"]
    assert quantization["format"] == "QDQ" and quantization["per_channel"] is True
    assert quantization["gate"]["passed"] and quantization["gate"]["quantized_nodes"] > 0
    ops = [n.op_type for n in onnx.load(str(out_dir / "model.onnx")).graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0


def test_static_int8_quantizes_a_fused_graph(tokenizer, sentences, out_dir) -> None:
    config = fast_config(quantize="static", fuse="on")
    report = export_onnx(tiny_model(), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences)
    assert report.fusion_choice == "fused"
    ops = [n.op_type for n in onnx.load(str(out_dir / "model.onnx")).graph.node]
    assert "Attention" in ops and "DequantizeLinear" in ops


def test_rank_uses_per_channel_error_so_an_outlier_channel_does_not_hide_the_rest(tokenizer, tmp_path) -> None:
    from exporters.onnx.quantize import rank_nodes
    from exporters.onnx.sessions import batches
    from tests.exporters.onnx.conftest import random_sentences

    spec = EXPORT_SPECS.get("bert")
    fp32 = tmp_path / "model.onnx"
    torch_to_onnx(_outlier_model(), trace_feed(tokenizer, spec), spec, fp32, opset=17)
    quantize_graph(fp32, tmp_path / "int8.onnx", QuantSettings("dynamic", False, False))
    feeds = batches(tokenizer, random_sentences(16), None, spec.inputs, max_length=64)
    ranking = rank_nodes(onnx.load(str(fp32)), onnx.load(str(tmp_path / "int8.onnx")), feeds)
    assert ranking[0][0] == POOLER
    assert ranking[0][1] > 0.5 > ranking[1][1]  # most pooler channels are lost entirely
    assert np.isfinite([error for _, error in ranking]).all()


def test_gate_keeps_nodes_cumulatively_when_no_single_node_helps(tokenizer, sentences, out_dir, monkeypatch) -> None:
    # Agreement rises only once two nodes are in fp32 together: every single-node trial is reverted, then the
    # cumulative pass must still reach the gate.
    excluded: list[list[str]] = [[]]
    real_quantize = quantize_module.quantize_graph

    def recording_quantize(src, dst, settings, *, exclude=(), calibration=None, int8_weights=False):
        excluded.append(list(exclude))
        return real_quantize(src, dst, settings, exclude=exclude, calibration=calibration, int8_weights=int8_weights)

    monkeypatch.setattr(quantize_module, "quantize_graph", recording_quantize)
    monkeypatch.setattr(quantize_module, "agreement", lambda reference, logits: 1.0 if len(excluded[-1]) >= 2 else 0.5)
    config = fast_config(fuse="off", per_channel=False)
    report = export_onnx(tiny_model(), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences)
    assert len(report.excluded_nodes) == 2
    assert report.agreement == 1.0


def test_excluded_weights_go_int8_only_while_the_gate_holds(tokenizer, sentences, out_dir, monkeypatch) -> None:
    # The gate passes once one node is fp32; storing that node's weights as int8 then "costs" agreement here, so
    # the export must keep them fp32 (not fail, and not ship a graph below the gate).
    from exporters.onnx import weight_only

    monkeypatch.setattr(weight_only, "MIN_ELEMENTS", 1)  # the tiny model's matrices count as worth storing
    real_quantize = quantize_module.quantize_graph
    state = {"int8_weights": False, "excluded": 0}

    def recording_quantize(src, dst, settings, *, exclude=(), calibration=None, int8_weights=False):
        state.update(int8_weights=int8_weights, excluded=len(exclude))
        return real_quantize(src, dst, settings, exclude=exclude, calibration=calibration, int8_weights=int8_weights)

    def fake_agreement(reference, logits):
        if state["excluded"] == 0:
            return 0.5
        return 0.9 if state["int8_weights"] else 1.0

    monkeypatch.setattr(quantize_module, "quantize_graph", recording_quantize)
    monkeypatch.setattr(quantize_module, "agreement", fake_agreement)
    config = fast_config(fuse="off", per_channel=False)
    report = export_onnx(_outlier_model(), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences)
    gate = report.manifest["quantization"]["gate"]
    assert gate["excluded_nodes"] and gate["excluded_nodes_int8_weights"] == [] and report.agreement == 1.0
    inits = {i.name for i in onnx.load(str(out_dir / "model.onnx")).graph.initializer}
    assert not any(name.endswith("_int8") for name in inits)  # the excluded weights stayed fp32

    # both weight forms pass the gate: the faster one is kept, int8 unless it is more than 3 % slower (timed at
    # 1 thread; here the timings are given, so that the choice does not depend on this machine's load)
    monkeypatch.setattr(quantize_module, "agreement", lambda reference, logits: 0.5 if state["excluded"] == 0 else 1.0)
    for int8_ms, chosen in ((1.02, "int8 weights"), (1.10, "fp32 weights")):
        monkeypatch.setattr(
            quantize_module,
            "time_graphs",
            lambda graphs, feed, *, threads, runs, ms=int8_ms: {"int8": {"p50_ms": ms}, "fp32": {"p50_ms": 1.0}},
        )
        report = export_onnx(
            _outlier_model(), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences
        )
        gate = report.manifest["quantization"]["gate"]
        assert gate["excluded_weight_forms"]["chosen"] == chosen
        assert gate["excluded_weight_forms"]["p50_ms_1_thread"] == {"int8": int8_ms, "fp32": 1.0}
        stored = gate["excluded_nodes"][:1] if chosen == "int8 weights" else []
        assert gate["excluded_nodes_int8_weights"] == stored  # stored int8 when the gate holds and it is not slower
        inits = {i.name for i in onnx.load(str(out_dir / "model.onnx")).graph.initializer}
        assert any(name.endswith("_int8") for name in inits) == bool(stored)


def test_int8_weights_are_kept_node_by_node_when_one_node_costs_the_gate(
    tokenizer, sentences, out_dir, monkeypatch
) -> None:
    # Two nodes stay fp32; int8 weights on all of them miss the gate because of one ("poison"), so the other keeps
    # its int8 weights alone (largest first, each kept while the gate holds) instead of both going back to fp32.
    from exporters.onnx import weight_only

    monkeypatch.setattr(weight_only, "MIN_ELEMENTS", 1)
    real_quantize = quantize_module.quantize_graph
    state: dict = {"exclude": [], "int8": []}
    stored_all: list[list[str]] = []

    def recording_quantize(src, dst, settings, *, exclude=(), calibration=None, int8_weights=False):
        chosen = list(exclude) if int8_weights is True else list(int8_weights or [])
        state.update(exclude=list(exclude), int8=chosen)
        stored = real_quantize(src, dst, settings, exclude=exclude, calibration=calibration, int8_weights=int8_weights)
        if int8_weights is True:
            stored_all.append(stored)
        return stored

    def fake_agreement(reference, logits):
        if len(state["exclude"]) < 2:
            return 0.5
        return 0.9 if state["exclude"][0] in state["int8"] else 1.0

    monkeypatch.setattr(quantize_module, "quantize_graph", recording_quantize)
    monkeypatch.setattr(quantize_module, "agreement", fake_agreement)
    monkeypatch.setattr(  # equal times: the int8 form is kept whenever the gate holds
        quantize_module, "time_graphs", lambda graphs, feed, *, threads, runs: {g: {"p50_ms": 1.0} for g in graphs}
    )
    config = fast_config(fuse="off", per_channel=False)
    report = export_onnx(tiny_model(), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences)
    gate = report.manifest["quantization"]["gate"]
    poison, *others = gate["excluded_nodes"]
    assert others and len(stored_all[-1]) >= 2  # both forms were possible
    assert gate["excluded_nodes_int8_weights"] == [n for n in stored_all[-1] if n != poison]
    assert report.agreement == 1.0
    graph = onnx.load(str(out_dir / "model.onnx"))
    assert any(i.name.endswith("_int8") for i in graph.graph.initializer)  # the other node's weights are int8


def test_rank_handles_static_int8_whose_attention_tensors_change_length_between_feeds(tokenizer, tmp_path) -> None:
    # static QDQ quantizes the attention MatMuls too: their outputs' last axis is the sequence, which differs
    # from one batch to the next (each is padded to its own longest sentence)
    from exporters.onnx.quantize import rank_nodes
    from exporters.onnx.sessions import batches
    from tests.exporters.onnx.conftest import random_sentences

    spec = EXPORT_SPECS.get("bert")
    fp32 = tmp_path / "model.onnx"
    torch_to_onnx(tiny_model(), trace_feed(tokenizer, spec), spec, fp32, opset=17)
    feeds = batches(tokenizer, random_sentences(24), None, spec.inputs, max_length=64, batch_size=4)
    assert len({f["input_ids"].shape[1] for f in feeds}) > 1  # the lengths do differ
    quantize_graph(fp32, tmp_path / "int8.onnx", QuantSettings("static", False, False), calibration=feeds)
    ranking = dict(rank_nodes(onnx.load(str(fp32)), onnx.load(str(tmp_path / "int8.onnx")), feeds))
    scores = next(name for name in ranking if name.endswith("attention/self/MatMul"))  # Q·Kᵀ: (…, seq, seq)
    assert np.isfinite(list(ranking.values())).all() and ranking[scores] != 0.0


WORD_EMBEDDINGS = "/bert/embeddings/word_embeddings/Gather"


def _initializer_types(path: Path) -> dict[str, int]:
    return {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer}


def test_int4_embeddings_store_the_word_table_in_four_bits_and_nothing_else(tokenizer, tmp_path: Path) -> None:
    from exporters.onnx.quantize import word_embedding_gather
    from exporters.onnx.sessions import batches, make_session, run_logits
    from tests.exporters.onnx.conftest import random_sentences

    spec = EXPORT_SPECS.get("bert")
    fp32 = tmp_path / "model.onnx"
    torch_to_onnx(tiny_model(vocab_size=512), trace_feed(tokenizer, spec), spec, fp32, opset=17)
    assert word_embedding_gather(onnx.load(str(fp32))) == WORD_EMBEDDINGS  # not the position or type table
    int8, int4 = tmp_path / "int8.onnx", tmp_path / "int4.onnx"
    quantize_graph(fp32, int8, QuantSettings("dynamic", False, False))
    quantize_graph(fp32, int4, QuantSettings("dynamic", False, False, embedding_bits=4))
    model = onnx.load(str(int4))
    types = _initializer_types(int4)
    assert types[f"{WORD_EMBEDDINGS}_int4/packed"] == onnx.TensorProto.UINT8  # two int4 values per byte
    packed = next(i for i in model.graph.initializer if i.name == f"{WORD_EMBEDDINGS}_int4/packed")
    width = tiny_model(vocab_size=512).config.hidden_size
    assert list(packed.dims) == [512, width // 2]
    assert not any(
        len(i.dims) == 2 and i.dims[0] == 512 and t == onnx.TensorProto.FLOAT
        for i, t in ((i, i.data_type) for i in model.graph.initializer)
    )  # no fp32 or int8 copy of the table left
    assert all(o.version == 17 for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert sum(n.op_type == "MatMulInteger" for n in model.graph.node) == sum(
        n.op_type == "MatMulInteger" for n in onnx.load(str(int8)).graph.node
    )  # the rest is quantized exactly as in the int8 graph
    assert int4.stat().st_size < int8.stat().st_size
    feeds = batches(tokenizer, random_sentences(16), None, spec.inputs, max_length=64)
    reference = run_logits(make_session(int8), feeds)
    assert np.abs(run_logits(make_session(int4), feeds) - reference).max() < 0.1 * np.abs(reference).max()


def test_int4_embeddings_stay_fp32_when_the_gate_excludes_the_lookup(tokenizer, tmp_path: Path) -> None:
    spec = EXPORT_SPECS.get("bert")
    fp32 = tmp_path / "model.onnx"
    torch_to_onnx(tiny_model(vocab_size=512), trace_feed(tokenizer, spec), spec, fp32, opset=17)
    kept = tmp_path / "kept.onnx"
    quantize_graph(fp32, kept, QuantSettings("dynamic", False, False, 4), exclude=[WORD_EMBEDDINGS])
    nodes = onnx.load(str(kept)).graph.node
    assert not any("_int4/" in n.name for n in nodes)
    gather = next(n for n in nodes if n.name == WORD_EMBEDDINGS)
    assert _initializer_types(kept)[gather.input[0]] == onnx.TensorProto.FLOAT


@pytest.mark.parametrize(("decode", "lookup_node"), [("load", "lookup"), ("lookup", "gather_bytes")])
def test_an_export_with_int4_embeddings_records_them_and_passes_the_gate(
    tokenizer, sentences, out_dir, decode, lookup_node
) -> None:
    """Both forms of the int4 lookup (decoded at load or per row) go through the gate and are recorded."""
    config = fast_config(fuse="off", embedding_bits=4, gate=0.9, embedding_decode=decode)
    report = export_onnx(
        tiny_model(vocab_size=512), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences
    )
    quantization = report.manifest["quantization"]
    assert quantization["embedding_bits"] == 4 and quantization["gate"]["passed"]
    assert quantization["embedding_decode"] == decode
    packed = next(i for i in onnx.load(str(out_dir / "model.onnx")).graph.initializer if i.name.endswith("/packed"))
    rows, width = packed.dims[0], packed.dims[1] * 2  # two int4 values per byte
    assert quantization.get("embedding_decoded_bytes") == (rows * width * 4 if decode == "load" else None)
    assert report.manifest["opset"] == 17  # the int4 lookup is made of standard ops
    names = [n.name for n in onnx.load(str(out_dir / "model.onnx")).graph.node]
    assert names.count(f"{WORD_EMBEDDINGS}_int4/{lookup_node}") == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"embedding_bits": 2}, "`embedding_bits` must be 8 or 4; got 2"),
        ({"embedding_bits": 4, "quantize": "none"}, "needs an int8 export"),
        ({"embedding_decode": "never"}, "`embedding_decode` must be one of lookup, load; got 'never'"),
    ],
)
def test_embedding_bits_are_checked(overrides: dict, message: str) -> None:
    from compressor.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        fast_config(**overrides)


def test_the_gate_tries_finer_int4_blocks_before_keeping_nodes_in_fp32(tokenizer, sentences, out_dir, monkeypatch):
    blocks: list[int | None] = []
    real = quantize_module.quantize_embedding_int4

    def spy(path: Path, node: str, *, block: int | None = None, decode: str = "load") -> None:
        blocks.append(block)
        real(path, node, block=block, decode=decode)

    monkeypatch.setattr(quantize_module, "quantize_embedding_int4", spy)
    # int4 rows in blocks of 32 miss the gate, in blocks of 16 they pass
    monkeypatch.setattr(quantize_module, "agreement", lambda reference, logits: 0.995 if blocks[-1] == 16 else 0.98)
    config = fast_config(fuse="off", embedding_bits=4, per_channel=True)
    report = export_onnx(
        tiny_model(vocab_size=512), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences
    )
    quantization = report.manifest["quantization"]
    assert [t["embedding_block"] for t in quantization["gate"]["tried"]] == [32, 16]
    assert quantization["embedding_block"] == 16 and report.excluded_nodes == []
    assert blocks[-1] == 16  # the artifact is the finer graph


def test_the_gate_records_the_int4_block_a_narrow_table_gets(tokenizer, sentences, out_dir, monkeypatch) -> None:
    scores = iter([0.98])  # the first graph misses the gate; any later one passes
    monkeypatch.setattr(quantize_module, "agreement", lambda reference, logits: next(scores, 0.995))
    config = fast_config(fuse="off", embedding_bits=4, per_channel=True)
    model = tiny_model(vocab_size=512, hidden_size=48, num_attention_heads=4)  # 48 wide: blocks of 16, not 32
    report = export_onnx(model, config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences)
    quantization = report.manifest["quantization"]
    assert [t["embedding_block"] for t in quantization["gate"]["tried"]] == [16]  # no second try at the same block
    assert quantization["embedding_block"] == 16


def test_a_fused_lookup_is_not_recorded_as_int4(tokenizer, sentences, out_dir) -> None:
    """ORT fuses the word-embedding lookup of the fused graph into EmbedLayerNormalization: no Gather to store in
    int4, so the manifest says 8 bits, not the 4 that were asked for."""
    config = fast_config(fuse="on", embedding_bits=4, gate=0.5)
    report = export_onnx(
        tiny_model(vocab_size=512), config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences
    )
    ops = [n.op_type for n in onnx.load(str(out_dir / "model.onnx")).graph.node]
    assert "EmbedLayerNormalization" in ops or "QEmbedLayerNormalization" in ops
    assert not any("_int4/" in n.name for n in onnx.load(str(out_dir / "model.onnx")).graph.node)
    quantization = report.manifest["quantization"]
    assert quantization["embedding_bits"] == 8 and "embedding_block" not in quantization


def test_int4_embeddings_of_a_width_no_standard_block_divides(tokenizer, sentences, out_dir, monkeypatch) -> None:
    """A width-pruned model (40 wide: no block of 16, 32, 64 or 128 fits) gets the largest even block that divides
    its width, and the gate's finer-block step, which would not divide it, is skipped."""
    scores = iter([0.98])  # the first graph misses the gate
    monkeypatch.setattr(quantize_module, "agreement", lambda reference, logits: next(scores, 0.995))
    config = fast_config(fuse="off", embedding_bits=4, per_channel=True)
    model = tiny_model(vocab_size=512, hidden_size=40, num_attention_heads=4)
    report = export_onnx(model, config, tokenizer=tokenizer, out_dir=out_dir, calibration_texts=sentences)
    quantization = report.manifest["quantization"]
    assert quantization["embedding_block"] == 20
    assert [t["embedding_block"] for t in quantization["gate"]["tried"]] == [20]
