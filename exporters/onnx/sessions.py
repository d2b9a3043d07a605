"""ONNX Runtime sessions for the export checks: build, feed, run in batches, time."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from exporters.measure import fixed_rows
from exporters.runtime import session_options

Feed = dict[str, np.ndarray]


def make_session(model: Path | str | bytes, *, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session with the runtime's settings (full graph optimisations), so that what the export measures and
    chooses is what the runtime runs."""
    options = session_options(threads)
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    input_names: Sequence[str],
    *,
    max_length: int,
    pad_to: int | None = None,
) -> Feed:
    """Tokenize into int64 arrays named after the graph inputs (token_type_ids = 0 when the tokenizer has none)."""
    padding: bool | str = "max_length" if pad_to is not None else True
    enc = tokenizer(
        list(texts),
        list(pairs) if pairs is not None else None,
        padding=padding,
        truncation=True,
        max_length=pad_to or max_length,
        return_tensors="np",
    )
    ids = np.asarray(enc["input_ids"], dtype=np.int64)  # (batch, sequence)
    feed: Feed = {}
    for name in input_names:
        feed[name] = np.asarray(enc[name], dtype=np.int64) if name in enc else np.zeros_like(ids)
    return feed


def batches(
    tokenizer: Any,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    input_names: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 32,
) -> list[Feed]:
    """The texts as padded batches (each padded to its own longest row)."""
    out = []
    for start in range(0, len(texts), batch_size):
        chunk_pairs = pairs[start : start + batch_size] if pairs is not None else None
        out.append(
            encode(tokenizer, texts[start : start + batch_size], chunk_pairs, input_names, max_length=max_length)
        )
    return out


def first_rows(feeds: Sequence[Feed], rows: int) -> list[Feed]:
    """The leading batches that hold (at least) `rows` rows."""
    out, seen = [], 0
    for feed in feeds:
        if seen >= rows:
            break
        out.append(feed)
        seen += len(next(iter(feed.values())))
    return out


def run_logits(session: ort.InferenceSession, feeds: Sequence[Feed]) -> np.ndarray:
    """Concatenated first output (logits) over `feeds`: (rows, num_labels)."""
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(None, {n: f[n] for n in names})[0] for f in feeds], axis=0)


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    """The model, serialized, with extra intermediate tensors exposed as graph outputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))  # ORT infers the type
    return copy.SerializeToString()


def timing_feed(tokenizer: Any, texts: Sequence[str], input_names: Sequence[str], *, batch: int, seq_len: int) -> Feed:
    """A (batch, seq_len) feed of real text, padded to exactly seq_len."""
    rows = fixed_rows(texts, batch, seq_len=seq_len, fill=True)  # seq_len real tokens, as the benchmark times them
    return encode(tokenizer, rows, None, input_names, max_length=seq_len, pad_to=seq_len)


def time_graphs(
    graphs: Mapping[str, Path], feed: Feed, *, threads: int, runs: int, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """p50/p90 ms per graph; runs are interleaved so that a noisy neighbour hurts all graphs alike."""
    sessions = {name: make_session(path, threads=threads) for name, path in graphs.items()}
    inputs = {name: {i.name: feed[i.name] for i in s.get_inputs()} for name, s in sessions.items()}
    for _ in range(warmup):
        for name, session in sessions.items():
            session.run(None, inputs[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, inputs[name])
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {
        name: {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90))}
        for name, t in times.items()
    }
