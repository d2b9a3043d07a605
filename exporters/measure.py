"""Benchmark artifacts side by side: latency (p50/p90/p99), throughput, size and accuracy (for regression
artifacts: Pearson, Spearman and MSE), in one process.

Fair comparison on a shared CPU: every artifact is loaded first, then runs are interleaved (one run of each
artifact per round, the order rotating each round) so drifts in clock speed or background load hit all alike.
Latency is the `session.run` time of pre-tokenized inputs (tokenization is the same work for every artifact).
Imports no torch: it runs where the artifacts run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from compressor.errors import ConfigError, DataError
from compressor.task import METRIC, REGRESSION, regression_metrics

if TYPE_CHECKING:
    from compressor.data import LabelledData
    from exporters.runtime import Runtime

logger = logging.getLogger(__name__)

# Real sentences of varied length and tone: the export's checks use them when given no evaluation or calibration
# text, and `benchmark` without --data times them (joined to seq_len tokens), so that a feed without data still
# looks up varied rows as real text does (a repeated phrase hid a per-row lookup cost: 0.11 against 0.7 ms).
BUILTIN_SENTENCES = (
    "The film is a charming, funny and surprisingly moving story about two old friends.",
    "I could not wait for it to end.",
    "A beautifully shot but painfully slow drama that never finds its heart.",
    "The acting is superb, especially in the quiet scenes between father and son.",
    "It's a mess.",
    "Nothing in this movie makes sense, and the jokes fall flat one after another.",
    "One of the best thrillers of the year, tense from the first minute to the last.",
    "The plot is predictable, yet the cast is so likeable that I enjoyed every minute.",
    "Dull.",
    "A smart, warm and generous comedy that trusts its audience.",
    "The sequel repeats every mistake of the original and adds a few new ones.",
    "Even the soundtrack could not save this tired collection of clichés.",
    "Her performance alone is worth the price of the ticket.",
    "The story drags in the middle, but the final act is thrilling.",
    "An ambitious, messy, often brilliant film that will divide audiences.",
    "I laughed, I cried, and I want to see it again.",
)
CPU_FLAG = re.compile(r"^(sse4|avx|fma|f16c|amx|vnni|avx_vnni|asimd|sve|i8mm|bf16|dotprod)")


@dataclass(kw_only=True)
class BenchmarkConfig:
    kind: ClassVar[str] = "benchmark"
    version: ClassVar[int] = 1

    threads: int = field(default=2, metadata={"help": "ONNX Runtime intra-op threads per session."})
    batch: int = field(default=1, metadata={"help": "Examples per latency run."})
    seq_len: int = field(default=128, metadata={"help": "Fixed sequence length: inputs padded/truncated to it."})
    fill: bool = field(
        default=True,
        metadata={
            "help": "Fill the fixed-length input with real text (sentences joined, then truncated to seq_len), so "
            "every position is a token; off: one sentence padded to seq_len (mostly masked positions)."
        },
    )
    real_lengths: bool = field(
        default=False, metadata={"help": "Also measure at the data's real sentence lengths (needs data)."}
    )
    runs: int = field(default=50, metadata={"help": "Timed runs per artifact (interleaved)."})
    warmup: int = field(default=10, metadata={"help": "Untimed runs per artifact before timing."})
    eval_batch_size: int = field(
        default=1,
        metadata={
            "help": "Sentences per run in the accuracy pass. 1 (unpadded) is the edge setting and what the export "
            "gate measures; dynamic int8 depends on padding, so a larger batch scores a slightly different model."
        },
    )
    eval_rows: int | None = field(default=None, metadata={"help": "Score accuracy on at most this many rows."})
    verify: bool = field(default=True, metadata={"help": "Check manifests and hashes (off: plain ONNX dirs)."})
    flush_denormals: bool = field(
        default=False,
        metadata={
            "help": "Flush denormals to zero in every session (baselines too): a softmax over padded positions runs "
            "faster; sets the calling thread's FTZ/DAZ flags for the rest of the process."
        },
    )
    profile: bool = field(
        default=False,
        metadata={"help": "Also profile each artifact with ONNX Runtime: the share of run time per op type."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for the sentences drawn for real-length runs."})

    def __post_init__(self) -> None:
        for name in ("threads", "batch", "runs", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer, got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"`warmup` must be a non-negative integer, got {self.warmup!r}")
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise ConfigError(f"`seq_len` must be an integer of at least 2, got {self.seq_len!r}")
        if self.eval_rows is not None and self.eval_rows < 1:
            raise ConfigError(f"`eval_rows` must be a positive integer, got {self.eval_rows!r}")


@dataclass
class Latency:
    """Milliseconds per run at one input shape; throughput in examples per second."""

    p50: float
    p90: float
    p99: float
    mean: float
    throughput: float
    batch: int
    seq_len: int | str  # an int, or "real" (mean tokens in `tokens`)
    runs: int
    tokens: float | None = None

    @classmethod
    def from_times(cls, times_ms: list[float], batch: int, seq_len: int | str, tokens: float | None = None) -> Latency:
        t = np.asarray(times_ms, dtype=np.float64)
        p50, p90, p99 = (float(np.percentile(t, q)) for q in (50, 90, 99))
        mean = float(t.mean())
        return cls(p50, p90, p99, mean, batch * 1000.0 / mean, batch, seq_len, len(t), tokens)


@dataclass
class ArtifactResult:
    name: str
    path: str
    model_bytes: int
    fixed: Latency
    real: Latency | None = None
    accuracy: float | None = None  # classification only
    eval_rows: int | None = None
    regression: dict[str, float] | None = None  # regression only: pearson, spearman, mse
    metric: str = "accuracy"  # the headline metric: accuracy, or pearson for regression
    score: float | None = None  # its value (accuracy, or Pearson's r)
    quantization: Any = None
    profile: dict[str, dict[str, float]] | None = None  # op type → ms per run and share of the run (--profile)
    # ratios against the first artifact
    speedup_p50: float = 1.0  # first.p50 / this.p50
    size_ratio: float = 1.0  # first.size / this.size (times smaller)
    accuracy_delta: float | None = None  # this - first, in points
    score_delta: float | None = None  # this - first, in points (× 100) of the headline metric


@dataclass
class BenchmarkReport:
    config: BenchmarkConfig
    machine: dict[str, Any]
    results: list[ArtifactResult]
    data: str | None = None
    task: str = "classification"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "benchmark-report",
            "config": asdict(self.config),
            "machine": self.machine,
            "data": self.data,
            "task": self.task,
            "results": [asdict(r) for r in self.results],
        }

    def write_json(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, vector-instruction flags (from /proc/cpuinfo), core counts and library versions."""
    import onnxruntime

    model, flags = platform.processor() or platform.machine(), []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and value.strip():
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = sorted(f for f in value.split() if CPU_FLAG.match(f))
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": model,
        "cpu_flags": flags,
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def benchmark(
    artifacts: list[Path],
    config: BenchmarkConfig,
    *,
    data: LabelledData | None = None,
    names: list[str] | None = None,
) -> BenchmarkReport:
    """Load every artifact, time them interleaved, score accuracy on `data`, and compare with the first.

    Args:
        artifacts: artifact directories (or `.onnx` files); the first is the reference for the ratios.
        data: labelled data: real sentences for the latency inputs, and the accuracy pass.
        names: what to call each artifact in the report (default: its directory name).
    """
    from exporters.runtime import Runtime

    if not artifacts:
        raise ConfigError("pass at least one artifact to benchmark")
    if config.real_lengths and data is None:
        raise ConfigError("`real_lengths` needs labelled data: pass --data")
    runtimes = [
        Runtime(a, threads=config.threads, verify=config.verify, flush_denormals=config.flush_denormals)
        for a in artifacts
    ]
    if names is not None and len(names) != len(artifacts):
        raise ConfigError(f"got {len(names)} names for {len(artifacts)} artifacts")
    names = names or _names([Path(a) for a in artifacts])
    task = runtimes[0].task
    other = next((n for n, rt in zip(names, runtimes, strict=True) if rt.task != task), None)
    if other is not None:
        raise ConfigError(
            f"`{names[0]}` is a {task} artifact but `{other}` is not; benchmark artifacts of one task together"
        )
    if data is not None and getattr(data, "is_regression", False) != (task == REGRESSION):
        kind = "regression scores" if getattr(data, "is_regression", False) else "class labels"
        raise DataError(
            f"data file `{data.path}` has {kind} but the artifacts are {task} models; pass data of their task"
        )
    texts = data.texts[:1000] if data is not None else list(BUILTIN_SENTENCES)
    pairs = data.text_pairs[:1000] if data is not None and data.text_pairs else None

    batch_texts = fixed_rows(texts, config.batch, seq_len=config.seq_len, fill=config.fill)
    batch_pairs = None if pairs is None else fixed_rows(pairs, config.batch, seq_len=config.seq_len, fill=config.fill)
    fixed_feeds = [[rt.encode(batch_texts, batch_pairs, pad_to=config.seq_len)] for rt in runtimes]
    fixed = [
        Latency.from_times(t, config.batch, config.seq_len)
        for t in _interleaved(runtimes, fixed_feeds, config, desc=f"latency seq {config.seq_len}")
    ]

    real: list[Latency | None] = [None] * len(runtimes)
    if config.real_lengths:
        feeds, tokens = _real_feeds(runtimes, data, config)
        times = _interleaved(runtimes, feeds, config, desc="latency real lengths")
        real = [Latency.from_times(t, config.batch, "real", tok) for t, tok in zip(times, tokens, strict=True)]

    accuracy: list[float | None] = [None] * len(runtimes)
    regression: list[dict[str, float] | None] = [None] * len(runtimes)
    eval_rows = None
    if data is not None:
        eval_data = data.head(config.eval_rows)
        eval_rows = len(eval_data)
        for i, (rt, n) in enumerate(zip(runtimes, names, strict=True)):
            if task == REGRESSION:
                regression[i] = evaluate_scores(rt, eval_data, batch_size=config.eval_batch_size, name=n)
            else:
                accuracy[i] = evaluate(rt, eval_data, batch_size=config.eval_batch_size, name=n)

    profiles: list[dict[str, dict[str, float]] | None] = [None] * len(runtimes)
    if config.profile:
        profiles = [
            profile_ops(rt.model_path, feed[0], threads=config.threads, flush_denormals=config.flush_denormals)
            for rt, feed in zip(runtimes, fixed_feeds, strict=True)
        ]

    results = [
        ArtifactResult(
            name=name,
            path=str(rt.model_path),
            model_bytes=rt.model_bytes,
            fixed=fx,
            real=rl,
            accuracy=acc,
            eval_rows=eval_rows,
            regression=reg,
            metric=METRIC[task],
            score=acc if reg is None else reg["pearson"],
            quantization=(rt.manifest or {}).get("quantization"),
            profile=prof,
        )
        for name, rt, fx, rl, acc, reg, prof in zip(
            names, runtimes, fixed, real, accuracy, regression, profiles, strict=True
        )
    ]
    first = results[0]
    for r in results:
        r.speedup_p50 = first.fixed.p50 / r.fixed.p50
        r.size_ratio = first.model_bytes / r.model_bytes
        if r.accuracy is not None and first.accuracy is not None:
            r.accuracy_delta = 100.0 * (r.accuracy - first.accuracy)
        if r.score is not None and first.score is not None:
            r.score_delta = 100.0 * (r.score - first.score)
    data_path = None if data is None else str(data.path)
    return BenchmarkReport(
        config=config, machine=machine_info(config.threads), results=results, data=data_path, task=task
    )


def fixed_rows(texts: Sequence[str], rows: int, *, seq_len: int, fill: bool) -> list[str]:
    """The texts of the fixed-length feed, one per row, row i starting at sentence i.

    With `fill`, a row joins sentences until it is surely longer than `seq_len` tokens (over 12 characters per
    token), so that truncation leaves no padding: the timing then covers seq_len real tokens, as a long input
    would. Without, a row is one sentence, padded to seq_len by the caller.
    """
    if not texts:
        raise ConfigError("the fixed-length feed needs at least one text")
    if not fill:
        return [texts[i % len(texts)] for i in range(rows)]
    out = []
    for i in range(rows):
        parts: list[str] = []
        size, k = 0, i
        while size <= 12 * seq_len and k < i + 100 * len(texts):  # the bound stops on all-empty texts
            part = texts[k % len(texts)]
            parts.append(part)
            size += len(part) + 1
            k += 1
        out.append(" ".join(parts))
    return out


def profile_ops(
    model_path: Path, feed: dict[str, np.ndarray], *, threads: int, runs: int = 30, flush_denormals: bool = False
) -> dict[str, dict[str, float]]:
    """ONNX Runtime's profile of `runs` runs of one feed: per op type, ms per run and share of the node time.

    A separate session with profiling on (the timed sessions stay unprofiled, so profiling never slows what is
    measured); sorted by time, largest first.
    """
    import onnxruntime as ort

    from compressor.fs import scratch_dir
    from exporters.runtime import session_options

    with scratch_dir("compressor-profile-") as tmp:
        options = session_options(threads, profile_prefix=str(Path(tmp) / "profile"), flush_denormals=flush_denormals)
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        inputs = {i.name: feed[i.name] for i in session.get_inputs()}
        for _ in range(runs):
            session.run(None, inputs)
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            op = str(event.get("args", {}).get("op_name", "?"))
            totals[op] = totals.get(op, 0.0) + float(event.get("dur", 0)) / 1000.0  # µs → ms
    whole = sum(totals.values()) or 1.0
    return {
        op: {"ms_per_run": round(ms / runs, 4), "share": round(ms / whole, 4)}
        for op, ms in sorted(totals.items(), key=lambda item: -item[1])
    }


def profile_table(
    profiles: list[tuple[str, dict[str, dict[str, float]] | None]], *, top: int = 8
) -> tuple[list[str], list[list[str]]]:
    """Per-op-type profiles side by side: one column per artifact (`ms per run (share)`), one row per op type; the
    `top` op types with the most time summed over the artifacts, the rest folded into `other`, and the total."""
    shown = [(name, prof) for name, prof in profiles if prof]
    totals: dict[str, float] = {}
    for _, prof in shown:
        for op, cell in prof.items():
            totals[op] = totals.get(op, 0.0) + cell["ms_per_run"]
    ops = sorted(totals, key=lambda op: -totals[op])[:top]
    headers = ["op type", *[name for name, _ in shown]]

    def cell(prof: dict[str, dict[str, float]], keys: list[str]) -> str:
        ms = sum(prof[k]["ms_per_run"] for k in keys if k in prof)
        share = sum(prof[k]["share"] for k in keys if k in prof)
        return f"{ms:.2f} ({100 * share:.0f}%)" if ms else "-"

    rows = [[op, *[cell(prof, [op]) for _, prof in shown]] for op in ops]
    if len(totals) > len(ops):
        rows.append(["other", *[cell(prof, [k for k in prof if k not in ops]) for _, prof in shown]])
    rows.append(["all nodes", *[cell(prof, list(prof)) for _, prof in shown]])
    return headers, rows


def evaluate(runtime: Runtime, data: LabelledData, *, batch_size: int = 1, name: str = "") -> float:
    """Accuracy of an artifact on labelled data, streamed in batches (never all rows encoded at once)."""
    from tqdm.auto import tqdm

    mapping = label_mapping(data.id2label, runtime.id2label, str(data.path))
    texts, pairs, labels = data.texts, data.text_pairs, data.labels
    correct = 0
    starts = range(0, len(texts), batch_size)
    for start in tqdm(
        starts, desc=f"accuracy {name}".strip(), disable=not logger.isEnabledFor(logging.INFO), leave=False
    ):
        end = start + batch_size
        logits = runtime.logits(texts[start:end], None if pairs is None else pairs[start:end])
        expected = np.asarray([mapping[y] for y in labels[start:end]])
        correct += int((logits.argmax(axis=-1) == expected).sum())
    return correct / max(len(texts), 1)


def evaluate_scores(runtime: Runtime, data: LabelledData, *, batch_size: int = 1, name: str = "") -> dict[str, float]:
    """Pearson, Spearman and MSE of a regression artifact's scores against the data's, streamed in batches."""
    from tqdm.auto import tqdm

    texts, pairs = data.texts, data.text_pairs
    scores: list[float] = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(
        starts, desc=f"scores {name}".strip(), disable=not logger.isEnabledFor(logging.INFO), leave=False
    ):
        end = start + batch_size
        scores += runtime.logits(texts[start:end], None if pairs is None else pairs[start:end])[:, 0].tolist()
    return regression_metrics(scores, data.labels)


def label_mapping(data_id2label: Mapping[int, str], model_id2label: Mapping[int, str], where: str) -> dict[int, int]:
    """Map the data's label ids to the model's: by name when the model knows every name, else by integer id."""
    by_name = {name: i for i, name in model_id2label.items()}
    if all(name in by_name for name in data_id2label.values()):
        return {i: by_name[name] for i, name in data_id2label.items()}
    # Integer-labelled data (SST-2 has 0/1) against a model with named labels: the ids are the labels.
    names = [str(name) for name in data_id2label.values()]
    if all(name.isdigit() and int(name) < len(model_id2label) for name in names):
        return {i: int(name) for i, name in data_id2label.items()}
    raise DataError(
        f"data file `{where}` has labels {', '.join(map(str, data_id2label.values()))} that the artifact does not "
        f"know (its labels: {', '.join(model_id2label.values())})"
    )


def _names(paths: list[Path]) -> list[str]:
    """Directory names, made unique with the parent's name when two collide."""
    names = [p.stem if p.suffix == ".onnx" else p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    names = [f"{p.parent.name}/{n}" for p, n in zip(paths, names, strict=True)]
    return [f"{n}#{i}" if names.count(n) > 1 else n for i, n in enumerate(names, 1)]


def _real_feeds(
    runtimes: list[Runtime], data: LabelledData, config: BenchmarkConfig
) -> tuple[list[list[dict[str, np.ndarray]]], list[float]]:
    """One batch of real sentences per run (the same sentences for every artifact), padded to their longest."""
    sample = data.sample(config.runs * config.batch, seed=config.seed)
    texts, pairs = sample.texts, sample.text_pairs
    count = config.runs * config.batch
    texts = [texts[i % len(texts)] for i in range(count)]
    pairs = None if pairs is None else [pairs[i % len(pairs)] for i in range(count)]
    feeds, tokens = [], []
    for rt in runtimes:
        batches = []
        for start in range(0, count, config.batch):
            chunk_pairs = None if pairs is None else pairs[start : start + config.batch]
            batches.append(rt.encode(texts[start : start + config.batch], chunk_pairs))
        feeds.append(batches)
        tokens.append(float(np.mean([b["attention_mask"].sum(axis=1).mean() for b in batches])))
    return feeds, tokens


def _interleaved(
    runtimes: list[Runtime], feeds: list[list[dict[str, np.ndarray]]], config: BenchmarkConfig, *, desc: str
) -> list[list[float]]:
    """Milliseconds per timed run, per runtime. Round r runs every runtime once, starting at runtime r mod n."""
    from tqdm.auto import tqdm

    n = len(runtimes)
    times: list[list[float]] = [[] for _ in runtimes]
    rounds = config.warmup + config.runs
    for r in tqdm(range(rounds), desc=desc, disable=not logger.isEnabledFor(logging.INFO), leave=False):
        for k in range(n):
            i = (r + k) % n
            feed = feeds[i][(r - config.warmup) % len(feeds[i])]
            start = time.perf_counter_ns()
            runtimes[i].run_feed(feed)
            elapsed = (time.perf_counter_ns() - start) / 1e6
            if r >= config.warmup:
                times[i].append(elapsed)
    return times


def plot(report: BenchmarkReport, path: Path) -> None:
    """Accuracy (regression: Pearson's r) vs p50 latency, one labelled point per artifact, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if any(r.score is None for r in report.results):
        raise ConfigError("the plot shows accuracy against latency: benchmark with labelled data (--data)")
    metric = report.results[0].metric
    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r in report.results:
        ax.scatter(r.fixed.p50, 100 * r.score, s=36)
        ax.annotate(r.name, (r.fixed.p50, 100 * r.score), textcoords="offset points", xytext=(5, 4), fontsize=8)
    cfg = report.config
    ax.set_xlabel(f"p50 latency (ms), batch {cfg.batch}, seq {cfg.seq_len}, {cfg.threads} threads")
    ax.set_ylabel("accuracy (%)" if metric == "accuracy" else f"{metric} × 100")
    ax.set_title(f"{metric} vs latency ({report.machine.get('cpu', 'cpu')})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(0, 1.2 * max(r.fixed.p50 for r in report.results))  # room for the labels on the right
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
