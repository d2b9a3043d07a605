"""A latency cost table measured once on this CPU: ms per head, per FFN neuron, per layer, and a base.

We time what will be deployed: random-weight copies of the model's architecture (1 or 2 layers, all / half / no
heads and neurons, built with our own surgery so zero-head layers use the same `HeadlessAttention` a pruned model
will), exported to ONNX and quantized to dynamic int8 as `compressor export` does (residual norms unfused), run
by ONNX Runtime with the runtime's session options at the given thread count, batch 1; then fit
`t = base + layers·layer + heads·head + neurons·neuron` by least squares on the p50s. The table is cached as JSON
keyed by shape, sequence length, threads, ONNX Runtime version and CPU.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compressor.arch.parts import arch_of, head_size, hidden_width, max_tokens
from compressor.arch.surgery import prune_ffn_, prune_heads_
from compressor.errors import CompressorError
from compressor.fs import scratch_dir
from compressor.sensitivity.cost import UnitCosts
from exporters.onnx.cpu import resolve_reduce_range
from exporters.onnx.export import spec_for, torch_to_onnx
from exporters.onnx.quantize import QuantSettings, quantize_graph
from exporters.onnx.sessions import time_graphs

logger = logging.getLogger(__name__)

FLOOR_MS = 1e-6  # a fitted slope at or below zero is noise: clamp so that score per cost stays finite


@dataclass(frozen=True)
class LatencyTable:
    """Fitted p50 latency (ms) of an encoder's parts at `seq_len`, batch 1, `threads` threads."""

    base_ms: float
    per_layer_ms: float
    per_head_ms: float
    per_neuron_ms: float
    seq_len: int
    threads: int
    key: dict[str, Any]

    def costs(self) -> UnitCosts:
        return UnitCosts("latency", self.per_head_ms, self.per_neuron_ms, self.per_layer_ms, self.base_ms)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "compressor" / "latency"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table_key(model: nn.Module, seq_len: int, threads: int) -> dict[str, Any]:
    config, arch = model.config, arch_of(model)
    return {
        "model_type": config.model_type,
        "hidden_size": hidden_width(model),
        "head_size": head_size(model),
        "num_heads": arch.num_heads(config),
        "intermediate_size": arch.intermediate_size(config),
        "hidden_act": arch.activation(config),
        "seq_len": seq_len,
        "threads": threads,
        "measured": "onnxruntime dynamic int8, probes interleaved",
        "onnxruntime": _ort_version(),
        "cpu": _cpu_name(),
    }


def latency_table(
    model: nn.Module,
    *,
    seq_len: int,
    threads: int,
    cache_dir: Path | None = None,
    repeats: int = 20,
) -> LatencyTable:
    """The cost table for `model`'s architecture: read from the cache, else measured (a few seconds) and cached."""
    key = table_key(model, seq_len, threads)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = (cache_dir or default_cache_dir()) / f"latency-{digest}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") == key:
                logger.info("latency cost table from %s", path)
                return LatencyTable(**data)
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
            logger.warning("ignoring unreadable latency cache %s", path)
    table = measure_latency_table(model, seq_len=seq_len, threads=threads, repeats=repeats)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(table.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as err:  # a read-only home must not stop the analysis
        logger.warning("could not cache the latency table in %s (%s)", path, err)
    return table


def _probe_model(model: nn.Module, layers: int, heads: int, neurons: int) -> nn.Module:
    """A random-weight copy of the architecture with `layers` layers of `heads` heads and `neurons` neurons."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.config)
    arch_of(model).set_num_layers(config, layers)
    config.vocab_size = 128  # the lookup cost does not depend on the vocabulary size
    config.compressor_structure = None
    probe = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    for i in range(layers):
        prune_heads_(probe, i, list(range(heads)))
        prune_ffn_(probe, i, list(range(neurons)))
    return probe


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _feed(probe: nn.Module, seq_len: int) -> dict[str, np.ndarray]:
    """One batch-1 input of `seq_len` tokens for the probes' graph inputs."""
    seq_len = min(seq_len, max_tokens(probe) or seq_len)
    ids = np.random.default_rng(0).integers(5, 128, size=(1, seq_len), dtype=np.int64)  # (batch, sequence)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {name: feed[name] for name in spec_for(probe).inputs}


def _deployed_graph(probe: nn.Module, feed: dict[str, np.ndarray], work: Path, name: str) -> Path:
    """The probe as deployed: exported to ONNX and quantized to dynamic int8."""
    spec = spec_for(probe)
    fp32, int8 = work / f"{name}.onnx", work / f"{name}.int8.onnx"
    torch_to_onnx(probe, feed, spec, fp32, opset=spec.opset)
    quantize_graph(
        fp32, int8, QuantSettings("dynamic", per_channel=False, reduce_range=resolve_reduce_range(None, None)[0])
    )
    return int8


def measure_latency_table(model: nn.Module, *, seq_len: int, threads: int, repeats: int = 20) -> LatencyTable:
    """Time probe models and fit the per-unit costs (see the module docstring). The probes are timed in one
    interleaved loop, so a noisy neighbour slows them all alike instead of skewing the fit."""
    arch = arch_of(model)
    heads, width = arch.num_heads(model.config), arch.intermediate_size(model.config)
    grid = [
        (1, heads, width),
        (1, 0, width),
        (1, heads, 0),
        (1, 0, 0),
        (1, heads // 2, width // 2),
        (2, heads, width),
        (2, 0, 0),
        (2, heads // 2, 0),
    ]
    rows = [[1.0, layers, layers * h, layers * n] for layers, h, n in grid]
    with scratch_dir("compressor-latency-") as tmp:
        graphs = {}
        for k, (layers, h, n) in enumerate(grid):
            probe = _probe_model(model, layers, h, n)
            feed = _feed(probe, seq_len)
            graphs[f"probe{k}"] = _deployed_graph(probe, feed, Path(tmp), f"probe{k}")
        timed = time_graphs(graphs, feed, threads=threads, runs=repeats)
    times = [timed[f"probe{k}"]["p50_ms"] for k in range(len(grid))]
    a = torch.tensor(rows, dtype=torch.float64)  # (configs, 4): base, layers, heads, neurons
    t = torch.tensor(times, dtype=torch.float64).unsqueeze(1)  # (configs, 1)
    solution = torch.linalg.lstsq(a, t).solution.squeeze(1)
    base, per_layer, per_head, per_neuron = (float(x) for x in solution)
    if not all(map(lambda x: x == x, (base, per_layer, per_head, per_neuron))):
        raise CompressorError("latency measurement failed (the fit produced NaN); rerun on an idle machine")
    table = LatencyTable(
        base_ms=max(base, 0.0),
        per_layer_ms=max(per_layer, 0.0),
        per_head_ms=max(per_head, FLOOR_MS),
        per_neuron_ms=max(per_neuron, FLOOR_MS),
        seq_len=seq_len,
        threads=threads,
        key=table_key(model, seq_len, threads),
    )
    logger.info(
        "latency cost table: base %.3f ms, layer %.3f ms, head %.4f ms, neuron %.6f ms",
        table.base_ms,
        table.per_layer_ms,
        table.per_head_ms,
        table.per_neuron_ms,
    )
    return table
