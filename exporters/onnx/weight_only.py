"""Weight-only int8 storage for the nodes the accuracy gate keeps in fp32.

A node excluded from quantization computes in fp32 because its *activations* quantize badly (outlier channels of
the FFN output, embedding sums); its weights round to int8 with little error. Storing those weights as int8 with a
`DequantizeLinear` in front keeps the node's arithmetic fp32 but cuts its storage by 4×: the gate's exclusions then
cost speed, not size. ORT does not constant-fold `DequantizeLinear` (it keeps QDQ pairs for its own fusions), so
the weights stay int8 in memory too and are dequantized on each run; for a MiniLM FFN matrix that is ~0.1 ms.

No quantizer option does this (ORT's `nodes_to_exclude` leaves the weights fp32), hence this small pass.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

# op type → (input index of the weight, axis whose slices get their own scale)
WEIGHT_INPUTS = {"MatMul": (1, 1), "Gather": (0, 0)}
MIN_ELEMENTS = 4096  # small tensors (biases, tiny tests' weights) are not worth a DequantizeLinear


def store_int8_weights_(model: onnx.ModelProto, nodes: Iterable[str]) -> list[str]:
    """Replace the fp32 weight of each named MatMul/Gather by int8 + per-channel `DequantizeLinear`, in place.

    Symmetric int8 (zero point 0) with one scale per output column (MatMul) or per row (Gather, an embedding).
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
                new_nodes.append(_dequantize(model, init, axis))
                rewritten.append(node.name)
        new_nodes.append(node)
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)  # each DequantizeLinear right before its consumer: still topological
    return rewritten


def _eligible(init: onnx.TensorProto) -> bool:
    return init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2 and int(np.prod(init.dims)) >= MIN_ELEMENTS


def _dequantize(model: onnx.ModelProto, init: onnx.TensorProto, axis: int) -> onnx.NodeProto:
    """Swap `init` for `<name>_int8` + scale + zero point and return the DequantizeLinear that recreates `<name>`."""
    weight = numpy_helper.to_array(init).astype(np.float32)
    peak = np.abs(weight).max(axis=1 - axis)  # one value per slice along `axis`
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = (1, -1) if axis == 1 else (-1, 1)
    q = np.clip(np.rint(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
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
