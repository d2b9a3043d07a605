"""Weight-only int8 storage for the nodes the accuracy gate keeps in fp32.

A node excluded from quantization computes in fp32 because its *activations* quantize badly (outlier channels of
the FFN output, embedding sums); its weights round to int8 with little error. Storing those weights as int8 with a
`DequantizeLinear` in front keeps the node's arithmetic fp32 but cuts its storage by 4×: the gate's exclusions then
cost speed, not size. ORT does not constant-fold `DequantizeLinear` (it keeps QDQ pairs for its own fusions), so
the weights stay int8 in memory too and are dequantized on each run; for a MiniLM FFN matrix that is ~0.1 ms.

An embedding lookup (Gather on axis 0) is rewritten differently: it gathers the int8 rows and their scales and
rescales only the looked-up rows (Gather → Cast → Mul), the same values as dequantizing the whole table first.
Dequantizing the table on every run cost 3.1 ms for an 11,575-row vocabulary at 1 thread (8.6 against 5.5 ms for the
whole 3-layer model), so the gate kept such tables fp32 (22 MB) whenever it excluded the word embeddings.

No quantizer option does this (ORT's `nodes_to_exclude` leaves the weights fp32), hence this small pass.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# op type → (input index of the weight, axis whose slices get their own scale)
WEIGHT_INPUTS = {"MatMul": (1, 1), "Gather": (0, 0)}
MIN_ELEMENTS = 4096  # small tensors (biases, tiny tests' weights) are not worth a DequantizeLinear


def store_int8_weights_(model: onnx.ModelProto, nodes: Iterable[str]) -> list[str]:
    """Replace the fp32 weight of each named MatMul/Gather by int8 + per-channel scales, in place.

    Symmetric int8 (zero point 0) with one scale per output column (MatMul, dequantized by `DequantizeLinear`) or per
    row (Gather on axis 0, an embedding: only the looked-up rows are rescaled).
    Weights shared with another node, non-2-D or small weights are left as they are. Returns the rewritten nodes.
    """
    wanted = set(nodes)
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    rewritten: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        spec = WEIGHT_INPUTS.get(node.op_type)
        if node.name in wanted and spec is not None:
            index, axis = spec
            name = node.input[index] if len(node.input) > index else ""
            init = inits.get(name)
            if init is not None and consumers.get(name) == 1 and _eligible(init):
                rewritten.append(node.name)
                if _is_row_lookup(node):
                    new_nodes.extend(_row_lookup(model, init, node))
                    continue
                new_nodes.append(_dequantize(model, init, axis))
        new_nodes.append(node)
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)  # each DequantizeLinear right before its consumer: still topological
    return rewritten


def _eligible(init: onnx.TensorProto) -> bool:
    return init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2 and int(np.prod(init.dims)) >= MIN_ELEMENTS


def _is_row_lookup(node: onnx.NodeProto) -> bool:
    return node.op_type == "Gather" and all(a.name != "axis" or a.i == 0 for a in node.attribute)


def _symmetric_int8(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scale per slice along `axis`): symmetric, zero point 0; an all-zero slice gets 1."""
    peak = np.abs(weight).max(axis=1 - axis)  # one value per slice along `axis`
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = (1, -1) if axis == 1 else (-1, 1)
    return np.clip(np.rint(weight / scale.reshape(shape)), -127, 127).astype(np.int8), scale


def _row_lookup(model: onnx.ModelProto, init: onnx.TensorProto, gather: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Swap the table `init` for int8 rows + a (rows, 1) scale and return the nodes that replace `gather`: the
    looked-up int8 rows, cast to float, times their looked-up scales (broadcast over the width)."""
    q, scale = _symmetric_int8(numpy_helper.to_array(init).astype(np.float32), 0)
    name, ids, out = init.name, gather.input[1], gather.output[0]
    model.graph.initializer.remove(init)
    model.graph.initializer.extend(
        [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale[:, None], f"{name}_int8_scale")]
    )
    base = gather.name or name
    return [
        helper.make_node("Gather", [f"{name}_int8", ids], [f"{base}/int8_rows"], name=f"{base}/int8_rows", axis=0),
        helper.make_node(
            "Gather", [f"{name}_int8_scale", ids], [f"{base}/row_scales"], name=f"{base}/row_scales", axis=0
        ),
        helper.make_node("Cast", [f"{base}/int8_rows"], [f"{base}/rows"], name=f"{base}/rows", to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{base}/rows", f"{base}/row_scales"], [out], name=f"{base}/rescale"),
    ]


def _dequantize(model: onnx.ModelProto, init: onnx.TensorProto, axis: int) -> onnx.NodeProto:
    """Swap `init` for `<name>_int8` + scale + zero point and return the DequantizeLinear that recreates `<name>`."""
    q, scale = _symmetric_int8(numpy_helper.to_array(init).astype(np.float32), axis)
    name = init.name
    model.graph.initializer.remove(init)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(q, f"{name}_int8"),
            numpy_helper.from_array(scale, f"{name}_int8_scale"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_int8_zero_point"),
        ]
    )
    return helper.make_node(
        "DequantizeLinear",
        [f"{name}_int8", f"{name}_int8_scale", f"{name}_int8_zero_point"],
        [name],
        name=f"{name}_DequantizeLinear",
        axis=axis,
    )
