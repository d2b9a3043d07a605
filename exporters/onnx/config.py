"""The export stage's config and report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from compressor.errors import ConfigError
from compressor.schema import HASH_IF_SET
from exporters.onnx.cpu import TARGETS

QUANTIZE_MODES = ("dynamic", "static", "none")
EMBEDDING_BITS = (8, 4)
EMBEDDING_DECODES = ("lookup", "load")  # when an int4 table is decoded (exporters/onnx/int4.py)
FUSE_MODES = ("auto", "on", "off")
MIN_OPSET, MAX_OPSET = 14, 20  # 14: ORT fusion patterns; 20: the TorchScript exporter's newest


@dataclass(kw_only=True)
class ExportConfig:
    kind: ClassVar[str] = "export"
    version: ClassVar[int] = 1

    quantize: str = field(
        default="dynamic", metadata={"help": "int8 quantization: dynamic, static (QDQ, calibrated) or none (fp32)."}
    )
    fuse: str = field(
        default="auto",
        metadata={"help": "ORT fusion: auto (fused kept only if ≥ 3 % faster at each thread count timed), on, off."},
    )
    per_channel: bool | None = field(
        default=None,
        metadata={
            "help": "Weights per output channel: true, false, or unset = per-tensor, per-channel where the gate "
            "needs it (before any node is kept in fp32).",
            "flag": "--per-channel/--per-tensor",
        },
    )
    reduce_range: bool | None = field(
        default=None,
        metadata={
            "help": "7-bit weights (for x86 CPUs without VNNI); default: from --optimize-for, else this CPU.",
            "flag": "--reduce-range/--no-reduce-range",
        },
    )
    gate: float = field(
        default=0.99,
        metadata={
            "help": "Minimum agreement of int8 with fp32 predictions (regression: R² of the int8 scores against "
            "fp32's); below it, nodes stay fp32 one by one."
        },
    )
    eval_samples: int = field(default=500, metadata={"help": "Sentences drawn from the evaluation data for the gate."})
    eval_batch: int = field(
        default=1,
        metadata={
            "help": "Sentences per run in the gate and accuracy checks. 1 (unpadded) is the edge setting; dynamic "
            "int8 depends on padding, so a larger batch measures a slightly different model."
        },
    )
    calibration_samples: int = field(default=200, metadata={"help": "Sentences used to calibrate static int8."})
    calibration_data: str | None = field(
        default=None,
        metadata={"help": "Text to calibrate static int8 on (labels not needed; default: the training data)."},
    )
    parity_atol: float | None = field(
        default=None, metadata={"help": "Max |Δlogit| of fp32 ONNX vs PyTorch; default: the architecture's (1e-4)."}
    )
    opset: int | None = field(
        default=None, metadata={"help": "ONNX opset; default: the architecture's (17 for BERT)."}
    )
    embedding_bits: int = field(
        default=8,
        metadata={
            "help": "Bits of the word-embedding table in an int8 export: 8, or 4 (block-wise int4 with an fp16 "
            "scale and offset per 32 weights, unpacked by standard ops for the looked-up rows only: ~60 % of the "
            "bytes of the largest tensor, ~0.2 ms at 128 tokens).",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )
    embedding_decode: str = field(
        default="lookup",
        metadata={
            "help": "With --embedding-bits 4, when the int4 table is decoded: lookup (the looked-up rows, at every "
            "run) or load (the whole table once, by ONNX Runtime's constant folding as it loads the model: a run "
            "pays one plain lookup, 3-7 % of the 3-layer SST-2 models' time, but the process holds the fp32 table "
            "and, while it folds, the decoding's intermediates: ~110 MB more RAM at the peak and ~70 MB after for "
            "a 11,575 x 384 table, against ~32 MB per lookup; the file is the same size).",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )
    max_length: int = field(default=128, metadata={"help": "Tokenizer truncation length, stored in the artifact."})
    optimize_for: str | None = field(
        default=None, metadata={"help": f"CPU target: {', '.join(TARGETS)}; recorded and sets reduce_range."}
    )
    sparse_threshold: float | None = field(
        default=0.9,
        metadata={"help": "Store a weight sparsely when at least this fraction is zero (size only); none disables."},
    )
    strict: bool = field(default=False, metadata={"help": "Fail (not warn) when fused-op counts do not match."})
    threads: int = field(
        default=2, metadata={"help": "Threads of the fused-vs-plain timing (1 is timed too) and the latency."}
    )
    batch: int = field(default=1, metadata={"help": "Batch size for the timing."})
    seq_len: int = field(default=128, metadata={"help": "Sequence length for the timing."})
    timing_runs: int = field(default=30, metadata={"help": "Timed runs per graph (after warm-up)."})

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE_MODES:
            raise ConfigError(f"`quantize` must be one of {', '.join(QUANTIZE_MODES)}; got {self.quantize!r}")
        if self.fuse not in FUSE_MODES:
            raise ConfigError(f"`fuse` must be one of {', '.join(FUSE_MODES)}; got {self.fuse!r}")
        if not 0.0 < self.gate <= 1.0:
            raise ConfigError(f"`gate` must be in (0, 1], e.g. 0.99; got {self.gate!r}")
        positive = ("eval_samples", "eval_batch", "calibration_samples", "threads", "batch", "seq_len", "timing_runs")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be a positive integer; got {getattr(self, name)!r}")
        if self.parity_atol is not None and not self.parity_atol > 0:
            raise ConfigError(f"`parity_atol` must be positive; got {self.parity_atol!r}")
        if self.opset is not None and not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ConfigError(f"`opset` must be between {MIN_OPSET} and {MAX_OPSET}; got {self.opset!r}")
        if self.embedding_bits not in EMBEDDING_BITS:
            raise ConfigError(f"`embedding_bits` must be 8 or 4; got {self.embedding_bits!r}")
        if self.embedding_decode not in EMBEDDING_DECODES:
            choices = ", ".join(EMBEDDING_DECODES)
            raise ConfigError(f"`embedding_decode` must be one of {choices}; got {self.embedding_decode!r}")
        if self.embedding_bits == 4 and self.quantize == "none":
            raise ConfigError("`embedding_bits: 4` needs an int8 export: set quantize to dynamic or static")
        if self.max_length < 8:
            raise ConfigError(f"`max_length` must be at least 8; got {self.max_length!r}")
        if self.optimize_for is not None and self.optimize_for not in TARGETS:
            raise ConfigError(f"`optimize_for` must be one of {', '.join(TARGETS)}; got {self.optimize_for!r}")
        if self.sparse_threshold is not None and not 0.0 < self.sparse_threshold <= 1.0:
            raise ConfigError(f"`sparse_threshold` must be in (0, 1]; got {self.sparse_threshold!r}")


@dataclass
class ExportReport:
    """What `export_onnx` wrote and measured (the full record is `manifest`, also in compressor.json)."""

    out_dir: Path
    model_bytes: int
    quantize: str
    fusion_choice: str  # "plain" or "fused"
    timings_ms: dict[str, float]  # p50 per candidate graph
    parity_max_abs_diff: float
    agreement: float | None  # int8 vs fp32 predictions; None without quantization
    excluded_nodes: list[str]
    accuracy: dict[str, Any] | None
    manifest: dict[str, Any]
    regression: dict[str, Any] | None = None  # a regression model's metrics of fp32 and the final graph
