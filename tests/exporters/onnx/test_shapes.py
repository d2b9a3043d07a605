"""Folding run-time Reshape targets into constants (exporters/onnx/shapes.py): the same outputs for any batch and
length, fewer nodes, and nothing rewritten that is not proven."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from exporters.onnx.shapes import fold_reshape_targets_, remove_dead_nodes_


def split_heads_graph(*, allowzero: int = 0, shape_of: str = "x") -> onnx.ModelProto:
    """x (batch, seq, 8) + bias → view(batch, -1, 2, 4), the batch read from `shape_of`'s shape as a trace writes
    it (Shape → Gather → Unsqueeze → Concat), and the heads joined back with (batch, seq, 8) read from the result."""
    inits = [
        numpy_helper.from_array(np.arange(8, dtype=np.float32), "bias"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array([-1, 2, 4], dtype=np.int64), "rest"),
        numpy_helper.from_array(np.array([8], dtype=np.int64), "width"),
    ]
    nodes = [
        helper.make_node("Add", ["x", "bias"], ["h"]),
        helper.make_node("Shape", [shape_of], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "axes"], ["b1"]),
        helper.make_node("Concat", ["b1", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["h", "target"], ["heads"], allowzero=allowzero),
        helper.make_node("Transpose", ["heads"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["t"], ["back"], perm=[0, 2, 1, 3]),
        helper.make_node("Shape", ["back"], ["s2"]),
        helper.make_node("Gather", ["s2", "zero"], ["b2"], axis=0),
        helper.make_node("Gather", ["s2", "one"], ["q2"], axis=0),
        helper.make_node("Unsqueeze", ["b2", "axes"], ["b2u"]),
        helper.make_node("Unsqueeze", ["q2", "axes"], ["q2u"]),
        helper.make_node("Concat", ["b2u", "q2u", "width"], ["joined_shape"], axis=0),
        helper.make_node("Reshape", ["back", "joined_shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "split_heads",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8]),
            helper.make_tensor_value_info("other", TensorProto.FLOAT, ["n", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"x": x, "other": np.zeros((2, 3), dtype=np.float32)}
    return session.run(None, feed)[0]


def test_both_targets_become_constants_and_their_arithmetic_goes() -> None:
    model = split_heads_graph()
    assert fold_reshape_targets_(model) == 2
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Add", "Reshape", "Transpose", "Transpose", "Reshape"]
    inits = {i.name: numpy_helper.to_array(i).tolist() for i in model.graph.initializer}
    targets = [inits[n.input[1]] for n in model.graph.node if n.op_type == "Reshape"]
    assert targets == [[0, -1, 2, 4], [0, 0, 8]]
    assert {"zero", "one", "axes", "rest", "width"}.isdisjoint(inits)  # read by nothing now
    onnx.checker.check_model(model)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 4), seq=st.integers(0, 9), seed=st.integers(0, 2**16))
def test_folded_graph_computes_the_same_for_any_batch_and_length(batch: int, seq: int, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal((batch, seq, 8)).astype(np.float32)
    original, folded = split_heads_graph(), split_heads_graph()
    fold_reshape_targets_(folded)
    np.testing.assert_array_equal(run(folded, x), run(original, x))  # (a 0 batch fails in both: -1 of nothing)


def test_a_dimension_of_an_unrelated_tensor_is_left_alone() -> None:
    """The batch read from `other` (dimension n) is not provably x's batch: that target stays as traced."""
    model = split_heads_graph(shape_of="other")
    assert fold_reshape_targets_(model) == 1  # only the join, whose pieces are its own input's dimensions
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape"]
    assert reshapes[0].input[1] == "target"
    assert "Shape" in [n.op_type for n in model.graph.node]


def test_an_allowzero_reshape_is_not_rewritten() -> None:
    model = split_heads_graph(allowzero=1)
    assert fold_reshape_targets_(model) == 1
    assert next(n for n in model.graph.node if n.op_type == "Reshape").input[1] == "target"


def test_dead_node_removal_keeps_everything_an_output_needs() -> None:
    model = split_heads_graph()
    unused = helper.make_node("Shape", ["x"], ["unused"])
    model.graph.node.append(unused)
    assert remove_dead_nodes_(model) == 1
    assert len(model.graph.node) == 15
    x = np.ones((2, 3, 8), dtype=np.float32)
    np.testing.assert_array_equal(run(model, x), x + np.arange(8, dtype=np.float32))


def test_a_traced_bert_keeps_no_shape_arithmetic_in_its_encoder(tmp_path, tokenizer) -> None:
    from exporters.onnx.export import torch_to_onnx, trace_feed
    from exporters.onnx.specs import EXPORT_SPECS
    from tests.models import tiny_model

    spec = EXPORT_SPECS.get("bert")
    model = tiny_model().eval()
    path = tmp_path / "plain.onnx"
    torch_to_onnx(model, trace_feed(tokenizer, spec), spec, path, opset=17)
    graph = onnx.load(str(path)).graph
    encoder_shapes = [n.name for n in graph.node if n.op_type == "Shape" and "/encoder/" in n.name]
    assert encoder_shapes == []
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    import torch

    for texts in (["a short one"], ["one", "two words here", "and a third, longer sentence of words"]):
        feed = tokenizer(texts, padding=True, return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in feed.items() if k in spec.inputs}
        with torch.no_grad():
            expected = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
        np.testing.assert_allclose(session.run(None, feed)[0], expected, atol=1e-5)


@pytest.mark.parametrize("ops", [["Add"]])
def test_a_graph_without_reshape_is_untouched(ops: list[str]) -> None:
    graph = helper.make_graph(
        [helper.make_node(ops[0], ["x", "x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = helper.make_model(graph)
    before = model.SerializeToString()
    assert fold_reshape_targets_(model) == 0
    assert model.SerializeToString() == before


def _whole_shape_graph() -> onnx.ModelProto:
    """Flat rows (n, 8) reshaped to ids.shape + (8,), the shape read one dimension at a time as traced."""
    inits = [
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array([8], dtype=np.int64), "width"),
        numpy_helper.from_array(np.array([-1, 8], dtype=np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["rows"]),
        helper.make_node("Shape", ["ids"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0),
        helper.make_node("Gather", ["s", "one"], ["d1"], axis=0),
        helper.make_node("Unsqueeze", ["d0", "axes"], ["u0"]),
        helper.make_node("Unsqueeze", ["d1", "axes"], ["u1"]),
        helper.make_node("Concat", ["u0", "u1", "width"], ["target"], axis=0),
        helper.make_node("Reshape", ["rows", "target"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "whole",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b", 8]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["a", "b"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_target_that_starts_with_a_whole_shape_reads_that_shape_once() -> None:
    """`rows.reshape(*ids.shape, 8)` on flat rows: ids' dimensions one by one become one Shape of ids."""
    model = _whole_shape_graph()
    assert fold_reshape_targets_(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Reshape", "Shape", "Concat", "Reshape"]
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x, "ids": np.zeros((3, 5), np.int64)})[0], x)


def test_a_whole_shape_target_keeps_an_empty_dimension_empty() -> None:
    """After the rewrite every entry of the target is a real size, so a 0 (no tokens) must stay 0 (allowzero)."""
    model = _whole_shape_graph()
    fold_reshape_targets_(model)
    assert any(a.name == "allowzero" and a.i == 1 for a in model.graph.node[-1].attribute)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.zeros((2, 0, 8), np.float32), "ids": np.zeros((2, 0), np.int64)})[0]
    assert out.shape == (2, 0, 8)
