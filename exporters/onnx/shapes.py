"""Constant Reshape targets in place of the shape arithmetic a traced graph computes at run time.

A traced BERT splits heads with `x.view(batch, -1, heads, head_size)` and joins them with `view(batch, seq, width)`:
the exporter writes each target as Shape → Gather → Unsqueeze → Concat, four to seven small nodes per Reshape,
evaluated on every call because batch and sequence are dynamic. ONNX's Reshape already copies an input dimension
where the target holds 0, so a target whose run-time pieces are the data's own dimensions at the same positions is
the constant `[0, -1, heads, size]` or `[0, 0, width]`. ORT's optimisers fold shapes only when they are static, and
onnx-simplifier the same; this pass proves the equality with ORT's symbolic shape inference (the same dimension
symbol on both sides) and rewrites nothing it cannot prove.

Measured on the SST-2 headline graph (3 layers, 1 thread): 45 nodes fewer (docs/benchmarks.md has the run).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

logger = logging.getLogger(__name__)


def fold_reshape_targets_(model: onnx.ModelProto) -> int:
    """Replace each provable run-time Reshape target with a constant, then drop the nodes nothing reads; in place.
    Returns how many targets were folded (0 leaves the model untouched)."""
    graph = model.graph
    if not any(n.op_type == "Reshape" for n in graph.node):
        return 0
    dims = _symbolic_dims(model)
    if dims is None:
        return 0
    producers = {out: node for node in graph.node for out in node.output}
    constants = _constants(graph)
    folded = 0
    for node in graph.node:
        if node.op_type != "Reshape" or any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        target = _constant_target(node, producers, constants, dims)
        if target is None:
            continue
        name = f"{node.name or node.output[0]}/folded_shape"
        graph.initializer.append(numpy_helper.from_array(np.asarray(target, dtype=np.int64), name))
        node.input[1] = name
        folded += 1
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    folded += _read_whole_shapes_(graph, producers, constants, dims, allowzero=opset >= 14)
    if folded:
        removed = remove_dead_nodes_(model)
        logger.info("folded %d run-time Reshape targets (%d nodes removed)", folded, removed)
    return folded


def _read_whole_shapes_(
    graph: onnx.GraphProto,
    producers: dict[str, onnx.NodeProto],
    constants: dict[str, np.ndarray],
    dims: dict[str, list[Any]],
    *,
    allowzero: bool,
) -> int:
    """A target that starts with every dimension of one tensor X in order (`reshape(*ids.shape, width)` traces
    as a Shape → Gather → Unsqueeze per dimension) reads Shape(X) once instead. Returns how many targets."""
    changed = 0
    for position in range(len(graph.node) - 1, -1, -1):
        reshape = graph.node[position]
        if reshape.op_type != "Reshape":
            continue
        concat = producers.get(reshape.input[1])
        if concat is None or concat.op_type != "Concat" or reshape.input[1] in constants:
            continue
        pieces = [_shape_element(piece, producers, constants) for piece in concat.input]
        source = pieces[0][0] if pieces and pieces[0] is not None else None
        rank = len(dims.get(source) or []) if source is not None else 0
        run = [(source, i) for i in range(rank)]
        if rank < 2 or pieces[:rank] != run:  # one dimension is already a single piece
            continue
        whole = f"{concat.name or concat.output[0]}/whole_shape"
        at = next(i for i, n in enumerate(graph.node) if n is concat)
        graph.node.insert(at, onnx.helper.make_node("Shape", [source], [whole], name=whole))
        rest = list(concat.input[rank:])
        del concat.input[:]
        concat.input.extend([whole, *rest])
        fixed = [constants[p].reshape(-1).tolist() for p in rest if p in constants]
        if allowzero and len(fixed) == len(rest) and not any(v in (0, -1) for values in fixed for v in values):
            # every entry is now a real size: a 0 is an empty dimension (0 tokens), not "copy the input's"
            kept = [a for a in reshape.attribute if a.name != "allowzero"]
            del reshape.attribute[:]
            reshape.attribute.extend([*kept, onnx.helper.make_attribute("allowzero", 1)])
        producers[whole] = graph.node[at]
        changed += 1
    return changed


def remove_dead_nodes_(model: onnx.ModelProto) -> int:
    """Drop nodes none of whose outputs reach a graph output, and initializers no node reads; in place. ONNX ops
    have no side effects, so an unread node changes nothing. Returns how many nodes went."""
    graph = model.graph
    live = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(out in live for out in node.output):
            keep.append(node)
            live.update(i for i in node.input if i)
            live.update(_subgraph_inputs(node))
    removed = len(graph.node) - len(keep)
    if removed:
        del graph.node[:]
        graph.node.extend(reversed(keep))
        unread = [i for i in graph.initializer if i.name not in live]
        for init in unread:
            graph.initializer.remove(init)
    return removed


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the outer scope."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in sub.node:
                names.update(inner.input)
                names.update(_subgraph_inputs(inner))
    return names


def _symbolic_dims(model: onnx.ModelProto) -> dict[str, list[Any]] | None:
    """Each tensor's dimensions as ints or symbols, from ORT's symbolic shape inference (None when it cannot
    run on this graph: nothing is folded then)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as err:  # noqa: BLE001  (the inference raises many kinds; without it we only skip a speed-up)
        logger.info("symbolic shape inference failed (%s): Reshape targets stay as traced", str(err)[:200])
        return None
    if inferred is None:
        return None
    out: dict[str, list[Any]] = {}
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    for value in values:
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type" or not value.type.tensor_type.HasField("shape"):
            continue
        shape = value.type.tensor_type.shape.dim
        out[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape]
    return out


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _constant_target(
    reshape: onnx.NodeProto,
    producers: dict[str, onnx.NodeProto],
    constants: dict[str, np.ndarray],
    dims: dict[str, list[Any]],
) -> list[int] | None:
    """The Reshape's target as constants (0 = copy the data's dimension there), or None when a piece is not
    provably the data's own dimension at its position."""
    data, shape = reshape.input[0], reshape.input[1]
    concat = producers.get(shape)
    data_dims = dims.get(data)
    if concat is None or concat.op_type != "Concat" or data_dims is None:
        return None
    target: list[int] = []
    for piece in concat.input:
        if piece in constants:
            values = constants[piece].reshape(-1).tolist()
            if 0 in values:  # a traced 0 already means "copy"; keep such graphs as they are
                return None
            target.extend(int(v) for v in values)
            continue
        source = _shape_element(piece, producers, constants)
        if source is None:
            return None
        tensor, index = source
        position = len(target)
        tensor_dims = dims.get(tensor)
        if tensor_dims is None or not -len(tensor_dims) <= index < len(tensor_dims) or position >= len(data_dims):
            return None
        want, have = tensor_dims[index], data_dims[position]
        if tensor == data and index in (position, position - len(data_dims)):
            target.append(0)
        elif isinstance(want, int) and want > 0:
            target.append(want)  # a static dimension is its own constant
        elif want is not None and want == have:
            target.append(0)
        else:
            return None
    if target.count(-1) > 1:
        return None
    return target


def _shape_element(
    name: str, producers: dict[str, onnx.NodeProto], constants: dict[str, np.ndarray]
) -> tuple[str, int] | None:
    """(tensor, index) when `name` is Unsqueeze(Gather(Shape(tensor), index)) as a 1-element vector."""
    unsqueeze = producers.get(name)
    if not isinstance(unsqueeze, onnx.NodeProto) or unsqueeze.op_type != "Unsqueeze":
        return None
    gather = producers.get(unsqueeze.input[0])
    if not isinstance(gather, onnx.NodeProto) or gather.op_type != "Gather" or gather.input[1] not in constants:
        return None
    index = constants[gather.input[1]]
    shape = producers.get(gather.input[0])
    if index.size != 1 or index.ndim != 0 or not isinstance(shape, onnx.NodeProto) or shape.op_type != "Shape":
        return None
    if any(a.name in ("start", "end") for a in shape.attribute):  # a sliced Shape indexes differently
        return None
    return shape.input[0], int(index)
