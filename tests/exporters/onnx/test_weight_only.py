from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from exporters.onnx.sessions import make_session
from exporters.onnx.weight_only import store_int8_weights_


def _graph(weight: np.ndarray, table: np.ndarray, *, shared: bool = False) -> onnx.ModelProto:
    """ids → Gather(table) → MatMul(weight) [→ second MatMul on the same weight when `shared`]."""
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="gather"),
        helper.make_node("MatMul", ["emb", "w"], ["y"], name="matmul"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, weight.shape[1]])]
    if shared:
        nodes.append(helper.make_node("MatMul", ["emb", "w"], ["y2"], name="matmul2"))
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, [None, weight.shape[1]]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        outputs,
        initializer=[numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    return make_session(model.SerializeToString()).run(None, {"ids": ids})[0]


def test_int8_weights_keep_outputs_close_and_shrink_storage() -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(64, 128)).astype(np.float32)
    weight[:, 7] *= 50.0  # one loud output column: per-column scales keep the others precise
    table = rng.normal(size=(100, 64)).astype(np.float32)
    model = _graph(weight, table)
    ids = np.arange(0, 100, 3, dtype=np.int64)
    reference = _run(model, ids)
    size = model.ByteSize()

    assert store_int8_weights_(model, ["matmul", "gather"]) == ["gather", "matmul"]
    inits = {i.name: i for i in model.graph.initializer}
    assert inits["w_int8"].data_type == inits["table_int8"].data_type == TensorProto.INT8
    assert "w" not in inits and "table" not in inits
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DequantizeLinear") == 1  # the MatMul's; the lookup rescales the rows it gathered
    assert ops[:4] == ["Gather", "Gather", "Cast", "Mul"] and model.graph.node[3].output[0] == "emb"
    assert model.ByteSize() < size / 3
    onnx.checker.check_model(model)
    out = _run(model, ids)
    err = np.abs(out - reference) / np.abs(reference).max(axis=0)  # relative to each column's scale
    assert err.max() < 0.05
    assert np.abs(out[:, :7] - reference[:, :7]).max() < 0.05 * np.abs(reference[:, :7]).max()


def test_shared_small_or_unnamed_weights_stay_fp32() -> None:
    rng = np.random.default_rng(1)
    model = _graph(
        rng.normal(size=(64, 128)).astype(np.float32), rng.normal(size=(8, 64)).astype(np.float32), shared=True
    )
    before = model.SerializeToString()
    # "matmul" shares its weight with "matmul2"; the 8×64 table is below the size floor; "other" does not exist
    assert store_int8_weights_(model, ["matmul", "gather", "other"]) == []
    assert model.SerializeToString() == before


def test_an_int8_lookup_rescales_the_gathered_rows_exactly_as_the_dequantized_table() -> None:
    """Ids of any shape (here batch × sequence) read the int8 rows times their own scales: the values of
    dequantizing the whole table first, without doing so; an all-zero row stays zero."""
    rng = np.random.default_rng(2)
    table = rng.normal(size=(300, 32)).astype(np.float32)
    table[5] = 0.0
    table[9] *= 40.0  # a loud row keeps its own scale
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], name="lookup")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [None, None, 32])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert store_int8_weights_(model, ["lookup"]) == ["lookup"]
    onnx.checker.check_model(model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert set(inits) == {"table_int8", "table_int8_scale"} and inits["table_int8"].dtype == np.int8
    dequantized = inits["table_int8"].astype(np.float32) * inits["table_int8_scale"]
    ids = np.array([[5, 9, 0, 299], [9, 9, 1, 5]], dtype=np.int64)
    out = make_session(model.SerializeToString()).run(None, {"ids": ids})[0]
    assert out.shape == (2, 4, 32)
    np.testing.assert_array_equal(out, dequantized[ids])
    assert not out[0, 0].any()
    half_step = np.abs(table[ids]).max(-1, keepdims=True) / 254  # rounding error of each row at its own scale
    assert (np.abs(out - table[ids]) <= half_step * 1.001 + 1e-7).all()
