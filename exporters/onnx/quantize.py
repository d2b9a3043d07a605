"""int8 quantization with ONNX Runtime's quantizer, behind an accuracy gate.

Dynamic int8 can collapse a model's accuracy without any warning (one outlier weight widens a tensor's scale
until its other weights round to zero), so every int8 graph is compared with fp32 on real sentences. Below the
gate, the node that adds the most output error stays fp32, then the next, until the predictions agree again.

What "agree" means (`validate.agreement`): for a classifier, the share of rows whose arg-max class is the same;
for a regression model (one output), the R² of the int8 scores against fp32's (1 − Σ(int8 − fp32)² /
Σ(fp32 − mean)²), so the default gate 0.99 lets int8 add error worth at most 1 % of the fp32 scores' variance.
Neither needs labels. On labelled regression data that bound keeps Pearson's r with the labels within a factor
about 1/√(1 + (1 − gate)) of fp32's (0.5 % at 0.99) when the rounding error is unrelated to the labels, and its
angle to them within arcsin(√(1 − gate)) at worst; the manifest records both graphs' Pearson, Spearman and MSE.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from compressor.errors import ExportError
from exporters.onnx.int4 import int4_lookup_
from exporters.onnx.sessions import Feed, first_rows, make_session, run_logits, time_graphs, with_outputs
from exporters.onnx.validate import agreement
from exporters.onnx.weight_only import store_int8_weights_

logger = logging.getLogger(__name__)

# DefaultTensorType: ORT's quantizer cannot infer the output types of contrib ops (Attention,
# SkipLayerNormalization, …) in a fused graph and fails without it (optimum issue 2186).
EXTRA_OPTIONS = {"DefaultTensorType": onnx.TensorProto.FLOAT}
STATIC_OP_TYPES = ("MatMul", "Gemm")  # static QDQ covers the weight projections; other ops stay fp32
RANK_ROWS = 64  # rows used to rank nodes by output error
SLOWER_TOLERANCE = 0.03  # int8 weights on fp32 nodes are kept (4× smaller) unless more than this much slower


# Weights per scale of the int4 embedding rows: the first block size that divides the width (even sizes only: two
# values per byte). Narrower blocks round more finely and store more scales: on the 3-layer SST-2 model (seed 42,
# 872 validation rows, every other node int8) int4 rows agreed with fp32 on 98.6 % of rows at 128, 99.0 % at 64 and
# 99.3 % at 32; with sparse vocabulary codes (each dropped id a sum of 8 rows, so 8 rows' rounding) 99.0 % at 32 and
# 99.4 % at 16 (measured with ORT's GatherBlockQuantized, min/max blocks like ours). 32 costs 1 bit per weight for
# the fp16 scale and offset, 16 twice that, so the gate starts at 32 and tries FINE_BLOCK before it keeps any node
# in fp32.
EMBEDDING_BLOCKS = (32, 16, 64, 128)
FINE_BLOCK = 16


@dataclass(frozen=True)
class QuantSettings:
    mode: str  # "dynamic" or "static"
    per_channel: bool
    reduce_range: bool
    embedding_bits: int = 8  # 4: the word embeddings as block-wise int4 (exporters.onnx.int4)
    embedding_block: int | None = None  # int4 weights per scale; None: the first of EMBEDDING_BLOCKS that fits
    embedding_decode: str = "lookup"  # int4 table decoded per looked-up row, or when the runtime loads the graph

    def _int4(self) -> dict[str, Any]:
        block = self.embedding_block or EMBEDDING_BLOCKS[0]
        return {"embedding_block": block, "embedding_decode": self.embedding_decode}

    def describe(self) -> dict[str, Any]:
        static = self.mode == "static"
        return {
            "mode": self.mode,
            "format": "QDQ" if static else "QOperator",
            "weight_type": "int8",
            "activation_type": "uint8",
            "op_types": list(STATIC_OP_TYPES) if static else "onnxruntime default",
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "embedding_bits": self.embedding_bits,
            **(self._int4() if self.embedding_bits == 4 else {}),
        }


@dataclass
class GateResult:
    threshold: float
    agreement: float
    initial_agreement: float
    samples: int
    quantized_nodes: int
    excluded_nodes: list[str] = field(default_factory=list)
    ranking: list[dict[str, Any]] = field(default_factory=list)  # top nodes by added error, when the gate fired
    logits: np.ndarray | None = None
    settings: QuantSettings | None = None  # what was finally used (per-channel may have been switched on)
    tried: list[dict[str, Any]] = field(default_factory=list)  # agreement of each weight granularity tried
    int8_weight_nodes: list[str] = field(default_factory=list)  # excluded nodes whose weights are stored int8
    weight_forms: dict[str, Any] | None = None  # timings of the excluded nodes' two weight forms, and the choice
    measure: str = "same predicted class"  # what `agreement` is: for regression, R² against the fp32 scores

    def describe(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "measure": self.measure,
            "agreement": self.agreement,
            "initial_agreement": self.initial_agreement,
            "samples": self.samples,
            "passed": self.agreement >= self.threshold,
            "quantized_nodes": self.quantized_nodes,
            "excluded_nodes": self.excluded_nodes,
            "excluded_nodes_int8_weights": self.int8_weight_nodes,
            "excluded_weight_forms": self.weight_forms,
            "ranking": self.ranking,
            "tried": self.tried,
        }


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ORT's quantizer logs progress and advice on the root logger; keep all but its errors out of our output."""

    class _DropRootChatter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.name != "root" or record.levelno >= logging.ERROR

    drop = _DropRootChatter()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


class _Calibration(CalibrationDataReader):
    """Prepared feeds for ORT's calibrator (a fresh reader per quantization run)."""

    def __init__(self, feeds: Sequence[Feed], input_names: Sequence[str]) -> None:
        self._feeds = iter([{n: f[n] for n in input_names} for f in feeds])

    def get_next(self) -> Feed | None:
        return next(self._feeds, None)


def quantize_graph(
    src: Path,
    dst: Path,
    settings: QuantSettings,
    *,
    exclude: Sequence[str] = (),
    calibration: Sequence[Feed] | None = None,
    int8_weights: bool | Collection[str] = False,
) -> list[str]:
    """Write the int8 version of `src` to `dst`, keeping the `exclude` nodes' arithmetic in fp32.

    With `int8_weights` (True: every excluded node; or the names of some of them), those nodes' weights are stored
    as int8 all the same (weight-only, `store_int8_weights_`); the names of the nodes so stored are returned.
    """
    embedding = word_embedding_gather(onnx.load(str(src))) if settings.embedding_bits == 4 else None
    if embedding is not None and embedding in exclude:
        embedding = None  # the gate asked for this lookup in fp32
    _quantize(src, dst, settings, exclude=[*exclude, *([embedding] if embedding else [])], calibration=calibration)
    if embedding is not None:
        quantize_embedding_int4(dst, embedding, block=settings.embedding_block, decode=settings.embedding_decode)
    if not exclude or not int8_weights:
        return []
    wanted = set(exclude)
    picked = wanted if int8_weights is True else wanted & set(int8_weights)
    model = onnx.load(str(dst))
    stored = store_int8_weights_(model, _exclusions(sorted(picked)))
    if stored:
        onnx.save(model, str(dst))
    # report Gemm `X` (rewritten by the quantizer to `X_MatMul` + Add) under its own name
    return [
        n.removesuffix("_MatMul") if n not in wanted and n.removesuffix("_MatMul") in wanted else n for n in stored
    ]


def word_embedding_gather(model: onnx.ModelProto) -> str | None:
    """The name of the Gather that looks up the word embeddings: the one reading the largest 2-D float
    initializer along axis 0 (none in a graph whose embeddings ORT fused into EmbedLayerNormalization)."""
    sizes = {
        i.name: int(np.prod(i.dims))
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2
    }
    best, best_size = None, 0
    for node in model.graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if node.op_type == "Gather" and axis == 0 and sizes.get(node.input[0], 0) > best_size:
            best, best_size = node.name, sizes[node.input[0]]
    return best


def default_embedding_block(model: onnx.ModelProto, node: str) -> int:
    """The int4 block for the table that Gather `node` reads: the first of EMBEDDING_BLOCKS dividing its width, else
    the largest even divisor up to 32 (a width-pruned model: 20 for a width of 200)."""
    gather = next(n for n in model.graph.node if n.name == node)
    width = next(list(i.dims) for i in model.graph.initializer if i.name == gather.input[0])[1]
    block = next((b for b in EMBEDDING_BLOCKS if width % b == 0), None)
    block = block or next((b for b in range(32, 1, -2) if width % b == 0), None)
    if block is None:
        raise ExportError(f"the word-embedding width {width} is odd: int4 packs pairs; export with --embedding-bits 8")
    return block


def _with_embedding_block(settings: QuantSettings, src: Path) -> QuantSettings:
    """`settings` naming the int4 block that will be used, so that the gate's records and its finer-block step
    see the block the graph gets (16, not 32, for a table 48 wide); embedding_bits 8 for a graph with no word
    embedding Gather to store in int4 (ORT fused the lookup into EmbedLayerNormalization), so that its records do
    not claim int4 embeddings it does not have."""
    if settings.embedding_bits != 4 or settings.embedding_block is not None:
        return settings
    model = onnx.load(str(src))
    node = word_embedding_gather(model)
    if node is None:
        logger.info("%s: no word-embedding Gather (fused lookup): its embeddings are not stored in int4", src.name)
        return dataclasses.replace(settings, embedding_bits=8)
    return dataclasses.replace(settings, embedding_block=default_embedding_block(model, node))


def quantize_embedding_int4(path: Path, node: str, *, block: int | None = None, decode: str = "lookup") -> None:
    """Store the word-embedding table of `path` as asymmetric int4 with one fp16 scale and offset per block of a
    row, looked up with standard ops (`exporters.onnx.int4`), in place: 5 bits per weight at blocks of 32 instead of 8.

    The embedding is the largest tensor of a pruned model and its rows are looked up, not multiplied, so int4
    costs little speed; the accuracy gate measures the graph with it like every other rounding. `decode`: when
    the table is decoded (`exporters.onnx.int4`: once at load, or per looked-up row).
    """
    model = onnx.load(str(path))
    int4_lookup_(model, node, block or default_embedding_block(model, node), decode=decode)
    onnx.save(model, str(path))


def _quantize(
    src: Path,
    dst: Path,
    settings: QuantSettings,
    *,
    exclude: Sequence[str],
    calibration: Sequence[Feed] | None,
) -> None:
    with _quiet_quantizer():
        if settings.mode == "dynamic":
            quantize_dynamic(
                str(src),
                str(dst),
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=_exclusions(exclude),
                extra_options=dict(EXTRA_OPTIONS),
            )
            return
        if not calibration:
            raise ExportError("static int8 needs calibration text; pass --calibration-data or --eval-data")
        input_names = [i.name for i in onnx.load(str(src), load_external_data=False).graph.input]
        reader = _Calibration(calibration, input_names)
        # symbolic shape inference knows ORT's contrib ops, so a fused graph's tensors get types (and so
        # calibration ranges); skip_optimization keeps node names, which `exclude` refers to
        typed = dst.with_name(dst.stem + ".typed.onnx")
        quant_pre_process(str(src), str(typed), skip_optimization=True, auto_merge=True)
        quantize_static(
            str(typed),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(STATIC_OP_TYPES),
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=_exclusions(exclude),
            extra_options={**EXTRA_OPTIONS, "ActivationSymmetric": False, "WeightSymmetric": True},
        )
        typed.unlink()


def quantized_nodes(fp32: onnx.ModelProto, int8: onnx.ModelProto) -> list[str]:
    """Names of fp32 nodes the quantizer replaced, or whose int8 twin reads a tensor fp32 does not have
    (a quantized weight, or a DequantizeLinear output in QDQ)."""
    known = {i.name for i in fp32.graph.initializer} | {i.name for i in fp32.graph.input}
    known |= {out for n in fp32.graph.node for out in n.output}
    int8_nodes = {n.name: n for n in int8.graph.node}
    names = []
    for node in fp32.graph.node:
        if not node.name:
            continue
        twin = int8_nodes.get(node.name)
        if twin is None and node.op_type == "Gemm":  # rewritten to MatMul `X_MatMul` + Add, maybe left fp32
            matmul = int8_nodes.get(f"{node.name}_MatMul")
            if matmul is not None and matmul.op_type == "MatMul":
                continue
        if twin is None or twin.op_type != node.op_type or any(i and i not in known for i in twin.input):
            names.append(node.name)
    return names


def _weight_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Per node, the bytes of its largest constant input (a MatMul's or Gemm's matrix, a lookup's table)."""
    sizes = {i.name: int(np.prod(i.dims)) * 4 for i in model.graph.initializer}
    return {n.name: max((sizes.get(i, 0) for i in n.input), default=0) for n in model.graph.node}


def _exclusions(nodes: Sequence[str]) -> list[str]:
    """Node names as ORT's quantizer sees them: it first rewrites each Gemm `X` into MatMul `X_MatMul` + Add."""
    return [name for node in nodes for name in (node, f"{node}_MatMul")]


def rank_nodes(fp32: onnx.ModelProto, int8: onnx.ModelProto, feeds: Sequence[Feed]) -> list[tuple[str, float]]:
    """Quantized nodes by the relative output error each adds (its output error minus its input's), worst first."""
    candidates = quantized_nodes(fp32, int8)
    constants = {i.name for i in fp32.graph.initializer} | {
        out for n in fp32.graph.node if n.op_type == "Constant" for out in n.output
    }
    nodes = {n.name: n for n in fp32.graph.node}
    wanted: dict[str, tuple[str, list[str]]] = {}
    for name in candidates:
        node = nodes[name]
        wanted[name] = (node.output[0], [i for i in node.input if i and i not in constants])
    in_int8 = {out for n in int8.graph.node for out in n.output} | {i.name for i in int8.graph.input}
    tensors = sorted({t for out, ins in wanted.values() for t in [out, *ins]} & in_int8)
    errors = _relative_errors(fp32, int8, tensors, feeds)
    ranked = []
    for name, (out, ins) in wanted.items():
        added = errors.get(out, 0.0) - max((errors.get(t, 0.0) for t in ins), default=0.0)
        ranked.append((name, float(added)))
    ranked.sort(key=lambda item: item[1], reverse=True)
    return ranked


def _relative_errors(
    fp32: onnx.ModelProto, int8: onnx.ModelProto, tensors: Sequence[str], feeds: Sequence[Feed]
) -> dict[str, float]:
    """Mean over channels (last axis) of ‖int8 − fp32‖ / ‖fp32‖ per float tensor, over all feeds.

    Per channel, because one outlier channel would otherwise dominate the norm and hide that every other
    channel of the same tensor was rounded to zero — the failure the gate exists for. A tensor whose last axis
    is not channels but the sequence (attention scores, which static int8 quantizes too) changes size between
    feeds of different lengths: it is measured as a whole.
    """
    sessions = [make_session(with_outputs(m, tensors)) for m in (fp32, int8)]
    diff_sq: dict[str, np.ndarray] = {}
    ref_sq: dict[str, np.ndarray] = {}
    for feed in feeds:
        results = []
        for session in sessions:
            names = [o.name for o in session.get_outputs()]
            values = session.run(names, {i.name: feed[i.name] for i in session.get_inputs()})
            results.append(dict(zip(names, values, strict=True)))
        for name in tensors:
            a, b = results[0].get(name), results[1].get(name)
            if not _comparable(a, b):
                continue
            channels = a.shape[-1]
            if name in diff_sq and diff_sq[name].size != channels:  # the last axis varies (or did): whole tensor
                diff_sq[name], ref_sq[name] = diff_sq[name].sum(keepdims=True), ref_sq[name].sum(keepdims=True)
                channels = 1
            a64 = a.astype(np.float64).reshape(-1, channels)  # (rows, channels)
            d64 = a64 - b.astype(np.float64).reshape(-1, channels)
            diff_sq[name] = diff_sq.get(name, 0.0) + np.sum(d64**2, axis=0)
            ref_sq[name] = ref_sq.get(name, 0.0) + np.sum(a64**2, axis=0)
    errors = {}
    for name, diff in diff_sq.items():
        live = ref_sq[name] > 0
        if live.any():
            errors[name] = float(np.mean(np.sqrt(diff[live] / ref_sq[name][live])))
    return errors


def _comparable(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Both float tensors of the same (non-scalar) shape: int8 graphs also hold integer tensors under fp32 names."""
    if a is None or b is None or a.shape != b.shape or a.ndim == 0:
        return False
    return a.dtype.kind == "f" and b.dtype.kind == "f"


def quantize_with_gate(
    src: Path,
    dst: Path,
    settings: QuantSettings,
    *,
    gate: float,
    reference: np.ndarray,
    feeds: Sequence[Feed],
    calibration: Sequence[Feed] | None = None,
    threads: int | None = None,
    name: str = "graph",
    try_per_channel: bool = False,
    timing_feed: Feed | None = None,
    timing_runs: int = 30,
) -> GateResult:
    """Quantize `src`; while int8 agrees with `reference` on fewer than `gate` of the rows, keep one more node fp32.

    Args:
        reference: fp32 logits of the rows in `feeds` (the predictions int8 must reproduce).
        try_per_channel: when per-tensor weights miss the gate, try per-channel weights before excluding nodes
            (per-channel scales follow each output row's range, which often rescues outlier-heavy layers).
        timing_feed: when nodes stay fp32 and both forms of their weights (fp32, int8 + DequantizeLinear) pass the
            gate, the two graphs are timed on this feed at 1 thread and the faster is kept.
    """

    def measure(
        candidate: QuantSettings, exclude: Sequence[str] = (), *, int8_weights: bool = False
    ) -> tuple[float, np.ndarray, list[str]]:
        """Quantize into `dst` and score it: (agreement with `reference`, logits, nodes given int8 weights)."""
        stored = quantize_graph(
            src, dst, candidate, exclude=exclude, calibration=calibration, int8_weights=int8_weights
        )
        out = run_logits(make_session(dst, threads=threads), feeds)
        return agreement(reference, out), out, stored

    def attempt(candidate: QuantSettings) -> tuple[float, np.ndarray]:
        score, out, _ = measure(candidate)
        record = {"per_channel": candidate.per_channel, "agreement": score}
        if candidate.embedding_bits == 4:
            record["embedding_block"] = candidate.embedding_block or EMBEDDING_BLOCKS[0]
        tried.append(record)
        int4 = f", int4 embeddings in blocks of {record['embedding_block']}" if "embedding_block" in record else ""
        logger.info(
            "%s int8 (%s, per_channel=%s%s) agrees with fp32 on %.2f%% of %d sentences",
            name,
            candidate.mode,
            candidate.per_channel,
            int4,
            100 * score,
            len(reference),
        )
        return score, out

    def with_int8_weights(result: GateResult) -> GateResult:
        """Store the excluded nodes' weights as int8 (4× smaller) if the gate still holds that way, else keep fp32.

        The search keeps nodes fully fp32; rounding their weights is a further, usually harmless change, but on a
        model with many near-tie predictions it can flip a few, so it is measured like every other candidate.
        """
        if not result.excluded_nodes:
            return result
        score, out, stored = measure(settings, result.excluded_nodes, int8_weights=True)
        if not stored:
            return result
        if score < gate and len(stored) > 1:
            # one node's rounded weights can cost the agreement the others' do not: give int8 weights node by
            # node, largest weights first (the most bytes saved), keeping each while the gate still holds
            kept: list[str] = []
            held = None  # the last trial, while it passed: `dst` then holds exactly the kept set
            for node in sorted(stored, key=lambda n: weight_bytes.get(n, 0), reverse=True):
                trial = measure(settings, result.excluded_nodes, int8_weights=[*kept, node])
                held = trial if trial[0] >= gate else None
                if held is not None:
                    kept.append(node)
            if kept:  # else `dst` holds a failed trial: the kept set once more
                score, out, stored = held or measure(settings, result.excluded_nodes, int8_weights=kept)
        if score >= gate and faster_with_int8_weights(result, stored):
            logger.info("%s: %d fp32 node(s) keep int8 weights; agreement %.4f", name, len(stored), score)
            result.int8_weight_nodes, result.agreement, result.logits = stored, score, out
            return result
        if score < gate:
            logger.info("%s: int8 weights on the fp32 nodes drop agreement to %.4f; they stay fp32", name, score)
        quantize_graph(src, dst, settings, exclude=result.excluded_nodes, calibration=calibration)
        return result

    def faster_with_int8_weights(result: GateResult, stored: list[str]) -> bool:
        """Whether the graph in `dst` (int8 weights on the fp32 nodes) runs at least as fast as fp32 weights would:
        a weight-only int8 MatMul can run slower than a plain fp32 one, so the form is measured, not assumed."""
        if timing_feed is None:
            return True
        plain = dst.with_name(dst.stem + ".fp32-weights.onnx")
        quantize_graph(src, plain, settings, exclude=result.excluded_nodes, calibration=calibration)
        times = time_graphs({"int8": dst, "fp32": plain}, timing_feed, threads=1, runs=timing_runs)
        plain.unlink()
        p50 = {form: round(t["p50_ms"], 3) for form, t in times.items()}
        result.weight_forms = {"p50_ms_1_thread": p50, "nodes": stored}
        keep = p50["int8"] <= (1 + SLOWER_TOLERANCE) * p50["fp32"]
        result.weight_forms["chosen"] = "int8 weights" if keep else "fp32 weights"
        logger.info("%s: fp32 nodes with int8 weights %.2f ms, fp32 weights %.2f ms (1 thread)", name, *p50.values())
        return keep

    settings = _with_embedding_block(settings, src)
    tried: list[dict[str, Any]] = []
    first, logits = attempt(settings)
    if first < gate and try_per_channel and not settings.per_channel:
        alternative = dataclasses.replace(settings, per_channel=True)
        second, second_logits = attempt(alternative)
        if second >= first:
            settings, first, logits = alternative, second, second_logits
        else:
            quantize_graph(src, dst, settings, calibration=calibration)  # put the better graph back in place
    block = settings.embedding_block or 0
    if first < gate and settings.embedding_bits == 4 and block > FINE_BLOCK and block % FINE_BLOCK == 0:
        finer = dataclasses.replace(settings, embedding_block=FINE_BLOCK)  # int4 rows rounded more finely
        score, finer_logits = attempt(finer)
        if score >= first:
            settings, first, logits = finer, score, finer_logits
        else:
            quantize_graph(src, dst, settings, calibration=calibration)
    fp32, int8 = onnx.load(str(src)), onnx.load(str(dst))
    weight_bytes = _weight_bytes(fp32)
    result = GateResult(
        gate,
        first,
        tried[0]["agreement"],
        len(reference),
        len(quantized_nodes(fp32, int8)),
        logits=logits,
        settings=settings,
        tried=tried,
        measure="r2 against fp32 scores" if reference.shape[-1:] == (1,) else "same predicted class",
    )
    if first >= gate:
        return result
    ranking = rank_nodes(fp32, int8, first_rows(feeds, RANK_ROWS))
    result.ranking = [{"node": n, "added_error": round(e, 6)} for n, e in ranking[:10]]
    logger.warning(
        "%s int8 agreement %.4f is below the gate %.4f: keeping the most damaging nodes in fp32", name, first, gate
    )
    # Greedy, in ranked order: keep a node in fp32 only if that raises agreement; a node whose exclusion does not
    # help (the per-node error ranking is a proxy, not the gate) goes back to int8, so no size is spent for nothing.
    best_logits = logits
    for node, error in ranking:
        trial = [*result.excluded_nodes, node]
        score, logits, _ = measure(settings, trial)
        kept = score > result.agreement
        logger.info("  fp32 %s (added error %.3g): agreement %.4f%s", node, error, score, "" if kept else ", reverted")
        if kept:
            result.excluded_nodes, result.agreement, best_logits = trial, score, logits
        if result.agreement >= gate:
            result.logits = best_logits
            return with_int8_weights(result)
    # No single further node helped (errors interact): keep nodes in fp32 cumulatively, in ranked order, until the
    # gate holds. With every node in fp32 the graph is the fp32 one, so this ends unless the gate is above 100 %.
    logger.warning(
        "%s: no single node lifts agreement above %.4f; keeping nodes in fp32 cumulatively", name, result.agreement
    )
    for node, error in ranking:
        if node in result.excluded_nodes:
            continue
        result.excluded_nodes.append(node)
        result.agreement, result.logits, _ = measure(settings, result.excluded_nodes)
        logger.info("  fp32 %s (added error %.3g): agreement %.4f", node, error, result.agreement)
        if result.agreement >= gate:
            return with_int8_weights(result)
    raise ExportError(
        f"int8 agreement with fp32 stays at {result.agreement:.4f}, below the gate {gate} even with all "
        f"{len(ranking)} quantized nodes kept in fp32; export with --quantize none or lower --gate"
    )
