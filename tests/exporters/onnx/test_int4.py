from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from compressor.errors import ExportError
from exporters.onnx.int4 import LEVELS, decoded_bytes, dequantize, int4_blocks, int4_lookup_
from exporters.onnx.sessions import make_session


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 12),
    groups=st.integers(1, 4),
    block=st.sampled_from([2, 4, 16, 32]),
    seed=st.integers(0, 2**16),
    spread=st.floats(1e-3, 1e3),
)
def test_int4_rows_are_within_half_a_step_of_the_table(rows, groups, block, seed, spread) -> None:
    table = (np.random.default_rng(seed).standard_normal((rows, groups * block)) * spread).astype(np.float32)
    packed, scale, offset = int4_blocks(table, block)
    assert packed.dtype == np.uint8 and packed.shape == (rows, groups * block // 2)
    assert scale.dtype == offset.dtype == np.float16 and scale.shape == (rows, groups)
    step = np.repeat(scale.astype(np.float32), block, axis=1)
    # half a step of rounding, plus what fp16 scale and offset add (relative 2^-11 of the block's range)
    bound = 0.5 * step + 1e-3 * np.repeat(np.abs(table).reshape(rows, groups, block).max(axis=2), block, axis=1)
    assert (np.abs(dequantize(packed, scale, offset) - table) <= bound + 1e-6).all()


def test_a_constant_block_is_stored_exactly_and_levels_use_the_whole_range() -> None:
    table = np.array([[0.5] * 4 + [0.0, 1.0, 2.0, 15.0]], dtype=np.float32)
    packed, scale, offset = int4_blocks(table, 4)
    assert scale[0, 0] == 0 and dequantize(packed, scale, offset)[0, :4].tolist() == [0.5] * 4
    np.testing.assert_allclose(dequantize(packed, scale, offset)[0, 4:], [0.0, 1.0, 2.0, 15.0])
    assert (packed >> 4).max() == LEVELS  # the block's max is level 15, in the high nibble of the last byte


def test_a_block_that_does_not_divide_the_width_is_refused() -> None:
    with pytest.raises(ExportError, match="an int4 block of 32 does not divide the embedding width 48"):
        int4_blocks(np.zeros((2, 48), dtype=np.float32), 32)


def _lookup_graph(table: np.ndarray, rank: int) -> onnx.ModelProto:
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [None] * rank)
    out = helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None] * (rank + 1))
    node = helper.make_node("Gather", ["table", "ids"], ["rows"], name="lookup", axis=0)
    graph = helper.make_graph([node], "g", [ids], [out], [numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


SHAPES = [(5,), (2, 3), (1, 1), (3, 0)]


@pytest.mark.parametrize("known_rank", [True, False], ids=["known-rank", "unknown-rank"])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_int4_lookup_gives_the_stored_rows_for_ids_of_any_shape(shape, known_rank, monkeypatch) -> None:
    """The `lookup` form (rows decoded per run). With the ids' rank known the reshapes are constant (no Shape
    node); without it they are computed."""
    table = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    model = _lookup_graph(table, len(shape))
    if not known_rank:
        monkeypatch.setattr("exporters.onnx.int4._rank", lambda model, tensor: None)
    int4_lookup_(model, "lookup", 32, decode="lookup")
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ("Shape" in ops) is not known_rank and ops.count("Reshape") == (2 if known_rank else 4)
    assert {i.name for i in model.graph.initializer} >= {"lookup_int4/packed", "lookup_int4/scale"}
    assert "table" not in {i.name for i in model.graph.initializer}  # the fp32 table is gone
    ids = np.random.default_rng(1).integers(0, 20, shape)
    (rows,) = make_session(model.SerializeToString(), threads=1).run(None, {"ids": ids})
    expected = dequantize(*int4_blocks(table, 32))[ids]
    assert rows.shape == (*shape, 64)
    np.testing.assert_allclose(rows, expected, rtol=0, atol=1e-6)
    assert ids.size == 0 or np.abs(rows - table[ids]).max() <= 0.6 * (table.max() - table.min()) / LEVELS


@pytest.mark.parametrize("shape", SHAPES)
def test_the_table_decoded_at_load_gives_the_same_rows_and_is_folded_by_onnx_runtime(shape, tmp_path) -> None:
    """The `load` form: bit for bit the rows of the `lookup` form, and every node before the Gather of the ids
    reads constants, so ONNX Runtime folds the decoding when it loads the graph (its optimized graph, at the basic
    level that constant folding belongs to, is that Gather of a float table in blocks and the Reshape of its rows)
    while the file keeps the packed table."""
    table = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    ids = np.random.default_rng(1).integers(0, 20, shape)
    rows = {}
    for decode in ("lookup", "load"):  # `model` is the load form after the loop
        model = _lookup_graph(table, len(shape))
        int4_lookup_(model, "lookup", 32, decode=decode)
        onnx.checker.check_model(model)
        (rows[decode],) = make_session(model.SerializeToString(), threads=1).run(None, {"ids": ids})
    assert rows["load"].shape == (*shape, 64)
    np.testing.assert_array_equal(rows["load"], rows["lookup"])
    initializers = {i.name: i for i in model.graph.initializer}
    assert "table" not in initializers and initializers["lookup_int4/packed"].data_type == TensorProto.UINT8
    assert [n.op_type for n in model.graph.node if "ids" in n.input] == ["Gather"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert [n.op_type for n in optimized.graph.node] == ["Gather", "Reshape"]  # the rows, out of their blocks
    folded = next(i for i in optimized.graph.initializer if i.name == optimized.graph.node[0].input[0])
    assert folded.data_type == TensorProto.FLOAT and list(folded.dims) == [20, 2, 32]  # 64 wide in blocks of 32
    assert decoded_bytes(model) == 20 * 64 * 4 and decoded_bytes(_lookup_graph(table, 1)) == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_the_table_decoded_at_load_serves_ids_of_unknown_rank(shape, monkeypatch) -> None:
    """Without the ids' rank the `load` form's rows are reshaped by the ids' shape computed at run time."""
    monkeypatch.setattr("exporters.onnx.int4._rank", lambda model, tensor: None)
    table = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    model = _lookup_graph(table, len(shape))
    int4_lookup_(model, "lookup", 16, decode="load")
    onnx.checker.check_model(model)
    ids = np.random.default_rng(1).integers(0, 20, shape)
    (rows,) = make_session(model.SerializeToString(), threads=1).run(None, {"ids": ids})
    assert rows.shape == (*shape, 64)
    np.testing.assert_array_equal(rows, dequantize(*int4_blocks(table, 16))[ids])


def test_the_int4_lookup_refuses_a_node_it_cannot_store_and_an_unknown_decode() -> None:
    model = _lookup_graph(np.zeros((4, 8), dtype=np.float32), 1)
    with pytest.raises(ExportError, match="no Gather `other`"):
        int4_lookup_(model, "other", 4)
    with pytest.raises(ExportError, match="unknown int4 decode `later`; use one of lookup, load"):
        int4_lookup_(model, "lookup", 4, decode="later")
