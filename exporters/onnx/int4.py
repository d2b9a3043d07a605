"""Block-wise int4 word embeddings written with standard ONNX ops.

The table is stored as two int4 values per byte (uint8: column j in the low nibble, column j + width / 2 in the
high one, so that unpacking is one concatenation of two halves) with an fp16 scale and offset per block of a row:
value = q * scale + offset, q in 0..15 (asymmetric, per-block min and max). The lookup has two forms
(`EMBEDDING_DECODES`):

- `lookup` (the default): the graph gathers the packed rows and the block parameters of the ids it is asked for,
  then unpacks and rescales only those rows, at every run. The process holds the packed bytes only.
- `load`: the graph unpacks and rescales the whole table from its initializers, then gathers the rows of the ids.
  Every node before that Gather reads constants only, so ONNX Runtime's constant folding (on at its default and
  at every optimization level from basic up) decodes the table once, when the session is created, and a run pays
  one plain Gather: on the 3-layer SST-2 models (11,575 rows x 384) 3.1-7.2 % less time at 128 tokens, 1 thread
  (the SST-2 sweep's `3-layers-load` rows against `3-layers-sparse`). The price is memory: the fp32 table is
  18 MB, and folding holds every intermediate of the decoding until it ends, so the chain is built to have few
  (`_decoded_table`): creating the session grew the process by 109-114 MB at its peak and 68-74 MB after 20 runs
  (an earlier chain of float nibble arithmetic: 197-214 and 150-167 MB), against 31-33 MB for the `lookup` form
  and 146 / 137 MB for the dense fp32 model (`python bench/memory.py`, AMD EPYC, 2026-12-01). The file is the
  same size. A runtime with graph optimizations off would decode the whole table at every run.

Both compute the same values with the same float operations.

Written here rather than through ONNX Runtime's weight-only quantizer (MatMulNBitsQuantizer → the contrib op
GatherBlockQuantized), which we used first: its CPU kernel dequantizes ~5.6 µs per 384-wide row on this host
(0.7 ms for 128 tokens, a fifth of the 3-layer SST-2 model's run), against ~0.22 ms for this subgraph; it also
needs opset 21 for the int4 tensor type, which switches off ORT fusions that match earlier op versions. These ops
are opset 13 and run in any ONNX runtime.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compressor.errors import ExportError
from exporters.onnx.config import EMBEDDING_DECODES

LEVELS = 15  # int4: q in 0..15


def int4_blocks(table: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(packed, scale, offset) of a (rows, width) float table: packed uint8 (rows, width / 2), scale and offset
    fp16 (rows, width / block). A constant block gets scale 0 and is its offset exactly."""
    rows, width = table.shape
    if width % block or width % 2:
        raise ExportError(f"an int4 block of {block} does not divide the embedding width {width}; use 16 or 32")
    blocks = table.astype(np.float32).reshape(rows, width // block, block)
    low, high = blocks.min(axis=2), blocks.max(axis=2)
    scale = ((high - low) / LEVELS).astype(np.float16)
    offset = low.astype(np.float16)
    step = scale.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step > 0, np.rint((blocks - offset.astype(np.float32)[..., None]) / step), 0.0)
    q = np.clip(q, 0, LEVELS).astype(np.uint8).reshape(rows, width)
    half = width // 2
    packed = (q[:, :half] | (q[:, half:] << 4)).astype(np.uint8)
    return packed, scale, offset


def dequantize(packed: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The float table that `int4_blocks` stored (what the graph computes for every row)."""
    rows, half = packed.shape
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)
    blocks = q.reshape(rows, scale.shape[1], -1)
    return (blocks * scale.astype(np.float32)[..., None] + offset.astype(np.float32)[..., None]).reshape(rows, -1)


def int4_lookup_(model: onnx.ModelProto, node: str, block: int, *, decode: str = "lookup") -> None:
    """Replace Gather `node` (axis 0 of a float initializer) by the int4 lookup of its table, in place, in the form
    `decode` (see the module docstring)."""
    if decode not in EMBEDDING_DECODES:
        raise ExportError(f"unknown int4 decode `{decode}`; use one of {', '.join(EMBEDDING_DECODES)}")
    graph = model.graph
    position, gather = next(((i, n) for i, n in enumerate(graph.node) if n.name == node), (None, None))
    if gather is None or gather.op_type != "Gather":
        raise ExportError(f"no Gather `{node}` in the graph to store in int4")
    inits = {i.name: i for i in graph.initializer}
    source = inits.get(gather.input[0])
    if source is None or len(source.dims) != 2:
        raise ExportError(f"Gather `{node}` does not read a 2-D initializer; export with --embedding-bits 8")
    table = numpy_helper.to_array(source)
    packed, scale, offset = int4_blocks(table, block)
    width, groups = table.shape[1], table.shape[1] // block
    base = f"{node}_int4"

    def name(part: str) -> str:
        return f"{base}/{part}"

    ids = gather.input[1]
    rank = _rank(model, ids)
    if decode == "load":
        nodes = _decoded_table(graph, packed, scale, offset, block, name)
        nodes.append(helper.make_node("Gather", [name("table"), ids], [name("rows")], name=name("lookup"), axis=0))
    else:
        if rank is not None:
            # the ids' rank is known: the block parameters are stored (rows, groups, 1), so their lookup is already
            # the broadcast shape, and the Reshapes copy the ids' dimensions (target 0) instead of computing them:
            # 4 nodes fewer per call, the same values (an empty id tensor's 0 is copied too)
            scale, offset = scale[..., None], offset[..., None]
        blocks_shape = [-1, groups, block] if rank is None else [0] * rank + [groups, block]
        _add_tables(graph, name, packed, scale, offset, blocks_shape)
        nodes = _row_nodes(graph, name, ids, rank, groups)
    nodes += _output_nodes(graph, name, ids, rank, width, gather.output[0])
    _replace_(graph, position, nodes, source)


def _row_nodes(
    graph: onnx.GraphProto, name: Callable[[str], str], ids: str, rank: int | None, groups: int
) -> list[onnx.NodeProto]:
    """The `lookup` form: gather the packed bytes and block parameters of `ids`, unpack and rescale them into
    `rows` (…, groups, block)."""
    nodes = [
        helper.make_node("Gather", [name("packed"), ids], [name("bytes")], name=name("gather_bytes"), axis=0),
        *_unpack_nodes(name("bytes"), name),  # the two halves of each looked-up row from the nibbles
        helper.make_node("Reshape", [name("levels"), name("blocks_shape")], [name("q")], name=name("q")),
    ]
    for part in ("scale", "offset"):  # their rows of the ids, as float, broadcastable over (…, groups, block)
        looked_up, wide = name(f"{part}16"), name(part[0]) if rank is not None else name(f"{part}32")
        nodes.append(helper.make_node("Gather", [name(part), ids], [looked_up], name=name(f"gather_{part}"), axis=0))
        nodes.append(helper.make_node("Cast", [looked_up], [wide], name=name(f"{part}32"), to=TensorProto.FLOAT))
        if rank is None:
            nodes.append(
                helper.make_node("Reshape", [wide, name("params_shape")], [name(part[0])], name=name(part[0]))
            )
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(16, dtype=np.float32), name("sixteen")),
            numpy_helper.from_array(np.array(1 / 16, dtype=np.float32), name("sixteenth")),
        ]
    )
    if rank is None:
        graph.initializer.append(
            numpy_helper.from_array(np.array([-1, groups, 1], dtype=np.int64), name("params_shape"))
        )
    nodes.append(helper.make_node("Mul", [name("q"), name("s")], [name("scaled")], name=name("scaled")))
    nodes.append(helper.make_node("Add", [name("scaled"), name("o")], [name("rows")], name=name("rows")))
    return nodes


def _output_nodes(
    graph: onnx.GraphProto, name: Callable[[str], str], ids: str, rank: int | None, width: int, output: str
) -> list[onnx.NodeProto]:
    """`rows` (…, groups, block) reshaped into `output` (…, width): the ids' dimensions copied when their rank is
    known, computed from their shape when not."""
    if rank is not None:
        graph.initializer.append(
            numpy_helper.from_array(np.array([0] * rank + [width], dtype=np.int64), name("out_shape"))
        )
        return [helper.make_node("Reshape", [name("rows"), name("out_shape")], [output], name=name("out"))]
    graph.initializer.append(numpy_helper.from_array(np.array([width], dtype=np.int64), name("width")))
    return [
        helper.make_node("Shape", [ids], [name("ids_shape")], name=name("ids_shape")),
        helper.make_node("Concat", [name("ids_shape"), name("width")], [name("out_shape")], name=name("cat"), axis=0),
        # allowzero: an empty id tensor's 0 is a size, not "copy this dimension"
        helper.make_node("Reshape", [name("rows"), name("out_shape")], [output], name=name("out"), allowzero=1),
    ]


def _unpack_nodes(packed: str, name: Callable[[str], str]) -> list[onnx.NodeProto]:
    """Nodes turning the uint8 tensor `packed` (…, width / 2) into its levels as float (…, width), vectorised:
    high = floor(b / 16), low = b - 16 high, then the two halves side by side. Reads initializers `sixteen` and
    `sixteenth`; writes `levels`."""
    return [
        helper.make_node("Cast", [packed], [name("wide")], name=name("wide"), to=TensorProto.FLOAT),
        helper.make_node("Mul", [name("wide"), name("sixteenth")], [name("shifted")], name=name("shifted")),
        helper.make_node("Floor", [name("shifted")], [name("high")], name=name("high")),
        helper.make_node("Mul", [name("high"), name("sixteen")], [name("high16")], name=name("high16")),
        helper.make_node("Sub", [name("wide"), name("high16")], [name("low")], name=name("low")),
        helper.make_node("Concat", [name("low"), name("high")], [name("levels")], name=name("levels"), axis=-1),
    ]


def _decoded_table(
    graph: onnx.GraphProto,
    packed: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    block: int,
    name: Callable[[str], str],
) -> list[onnx.NodeProto]:
    """The `load` form's initializers (added to `graph`) and the nodes that decode the whole table into `table`
    (rows, groups, block) float, from constants only: what ONNX Runtime folds when it loads the graph.

    Folding keeps every intermediate until it ends, so the chain is made to hold few full-size float tensors: the
    nibbles are split with bit shifts on the bytes and split into blocks while still uint8, and the table stays in
    blocks (only the looked-up rows are reshaped, per run). Three float tensors of the table's size, where float
    nibble arithmetic on the whole table (`_unpack_nodes`) held five and five of half its size; the memory this
    saves is measured in the module docstring."""
    rows, groups = scale.shape
    # the block parameters (rows, groups, 1): they broadcast over a block
    _add_tables(graph, name, packed, scale[..., None], offset[..., None], [rows, groups, block])
    graph.initializer.append(numpy_helper.from_array(np.array(4, dtype=np.uint8), name("four")))
    return [
        helper.make_node(
            "BitShift", [name("packed"), name("four")], [name("high")], name=name("high"), direction="RIGHT"
        ),
        helper.make_node("BitShift", [name("packed"), name("four")], [name("up")], name=name("up"), direction="LEFT"),
        helper.make_node("BitShift", [name("up"), name("four")], [name("low")], name=name("low"), direction="RIGHT"),
        helper.make_node("Concat", [name("low"), name("high")], [name("levels")], name=name("levels"), axis=-1),
        helper.make_node("Reshape", [name("levels"), name("blocks_shape")], [name("q8")], name=name("q8")),
        helper.make_node("Cast", [name("q8")], [name("q")], name=name("q"), to=TensorProto.FLOAT),
        helper.make_node("Cast", [name("scale")], [name("s")], name=name("scale32"), to=TensorProto.FLOAT),
        helper.make_node("Cast", [name("offset")], [name("o")], name=name("offset32"), to=TensorProto.FLOAT),
        helper.make_node("Mul", [name("q"), name("s")], [name("scaled")], name=name("scaled")),
        helper.make_node("Add", [name("scaled"), name("o")], [name("table")], name=name("table")),
    ]


def _add_tables(
    graph: onnx.GraphProto,
    name: Callable[[str], str],
    packed: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    blocks_shape: list[int],
) -> None:
    """The initializers both forms read: the packed table, its block parameters and the shape that splits levels
    into blocks."""
    graph.initializer.extend(
        [
            numpy_helper.from_array(packed, name("packed")),
            numpy_helper.from_array(scale, name("scale")),
            numpy_helper.from_array(offset, name("offset")),
            numpy_helper.from_array(np.array(blocks_shape, dtype=np.int64), name("blocks_shape")),
        ]
    )


def _replace_(graph: onnx.GraphProto, position: int, nodes: list[onnx.NodeProto], source: onnx.TensorProto) -> None:
    """Put `nodes` where the Gather at `position` was; drop the fp32 table when nothing else reads it."""
    del graph.node[position]
    for offset_in_graph, new in enumerate(nodes):
        graph.node.insert(position + offset_in_graph, new)
    if not any(source.name in n.input for n in graph.node):  # the fp32 table is read by nothing else now
        graph.initializer.remove(source)


def decoded_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the fp32 tables that the `load` form has the runtime decode and hold (0 without one)."""
    decoded = {n.name.removesuffix("/table") for n in model.graph.node if n.name.endswith("_int4/table")}
    packed = [i for i in model.graph.initializer if i.name.endswith("/packed")]
    return sum(int(np.prod(i.dims)) * 2 * 4 for i in packed if i.name.removesuffix("/packed") in decoded)


def _rank(model: onnx.ModelProto, tensor: str) -> int | None:
    """The rank of `tensor` from ONNX shape inference (None where it cannot tell)."""
    if any(i.name == tensor for i in model.graph.initializer):
        return None
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001  (contrib ops and the like: then the rank is simply not known)
        return None
    for value in [*inferred.graph.input, *inferred.graph.value_info]:
        if value.name == tensor and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    return None
