"""The SST-2 benchmark's settings: the operating points, the `--quick` preset and `BenchConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from compressor.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT / "samples" / "data" / "sst2"
SST2_TRAIN_ROWS = 67_349
# Operating points: fraction of attention heads and of FFN neurons removed, relative to the unpruned model.
POINTS: dict[str, tuple[float, float]] = {"light": (0.3, 0.4), "medium": (0.4, 0.5), "aggressive": (0.6, 0.7)}
STRUCTURES = ("plan", "uniform")
RECOVER = ("none", "distill", "reconstruct", "reconstruct+distill")  # as compressor.prune.api.RECOVER
VOCAB = ("train", "none")
# `--quick` values for every option the user did not give.
QUICK: dict[str, Any] = {
    "train_samples": 256,
    "eval_rows": 200,
    "methods": ("full", "lora"),
    "points": ("medium", "aggressive"),
    "plan_samples": 64,
    "export_eval_samples": 64,
    "runs": 20,
    "warmup": 3,
    "batch_runs": 4,
    "batch_warmup": 1,
    "timing_runs": 5,
    "fuse": "off",
    "out": Path("runs/bench-quick"),
}


@dataclass(kw_only=True)
class BenchConfig:
    kind: ClassVar[str] = "bench-sst2"
    version: ClassVar[int] = 1

    model: str = field(default="minilm", metadata={"help": "Checkpoint to start from (`minilm`: the bundled one)."})
    train_file: Path = field(default=SST2 / "train.tsv", metadata={"help": "Training data (SST-2 train)."})
    eval_file: Path = field(default=SST2 / "validation.tsv", metadata={"help": "Validation data (872 rows)."})
    out: Path = field(default=Path("runs/bench"), metadata={"help": "Cache directory of the stages."})
    docs: Path = field(default=ROOT / "docs", metadata={"help": "Where benchmarks.md, pareto.png and the JSON go."})
    train_samples: int = field(default=8000, metadata={"help": "Training rows (one fixed sample) of every run."})
    epochs: float = field(default=1.0, metadata={"help": "Epochs over the training sample."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size (fine-tuning and recovery)."})
    lr: float | None = field(default=None, metadata={"help": "Fine-tuning learning rate (default: each method's)."})
    methods: tuple[str, ...] | None = field(default=None, metadata={"help": "Methods with a row (default: all)."})
    points: tuple[str, ...] = field(default=tuple(POINTS), metadata={"help": "Operating points of full FT."})
    method_point: str = field(default="medium", metadata={"help": "Operating point of the method rows."})
    structure: str = field(
        default="plan",
        metadata={"help": "plan: sensitivity plan at the point's FLOPs; uniform: the same fractions in every layer."},
    )
    scorer: str = field(default="fisher", metadata={"help": "Sensitivity scorer of the plans."})
    plan_samples: int = field(default=512, metadata={"help": "Training rows used to score heads and neurons."})
    recover: str = field(default="distill", metadata={"help": "Recovery after pruning (see PruneConfig.recover)."})
    recover_epochs: float = field(default=0.5, metadata={"help": "Distillation epochs over the training sample."})
    recover_lr: float = field(default=1e-4, metadata={"help": "Learning rate of the distillation."})
    vocab: str = field(default="train", metadata={"help": "train: keep the tokens of the training file; none."})
    fuse: str = field(default="auto", metadata={"help": "ORT transformer fusion of our exports: auto, on, off."})
    export_eval_samples: int = field(default=500, metadata={"help": "Validation rows of the int8 accuracy gate."})
    timing_runs: int = field(default=30, metadata={"help": "Timed runs of the export's fused-vs-plain choice."})
    threads: tuple[int, ...] = field(default=(1, 2), metadata={"help": "ONNX Runtime thread counts measured."})
    seq_len: int = field(default=128, metadata={"help": "Fixed sequence length of the latency rows."})
    throughput_batch: int = field(default=32, metadata={"help": "Batch size of the throughput rows."})
    runs: int = field(default=200, metadata={"help": "Timed runs per artifact at batch 1 (interleaved)."})
    warmup: int = field(default=20, metadata={"help": "Untimed runs per artifact at batch 1."})
    batch_runs: int = field(default=20, metadata={"help": "Timed runs per artifact at the throughput batch."})
    batch_warmup: int = field(default=3, metadata={"help": "Untimed runs per artifact at the throughput batch."})
    eval_rows: int | None = field(default=None, metadata={"help": "Validation rows scored (default: all)."})
    seed: int = field(default=42, metadata={"help": "Seed of the training sample, training and scoring."})
    save_steps: int = field(default=100, metadata={"help": "Fine-tuning checkpoint interval (for resuming)."})
    rerun: tuple[str, ...] = field(default=(), metadata={"help": "Stage names (or prefixes) to run again."})
    quick: bool = field(default=False, metadata={"help": "A small development run (recorded in the output)."})
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})
    command: str = field(default="", metadata={"help": "The command line, recorded in the output."})

    def __post_init__(self) -> None:
        for name in (
            "train_samples",
            "batch_size",
            "plan_samples",
            "export_eval_samples",
            "timing_runs",
            "seq_len",
            "throughput_batch",
            "runs",
            "batch_runs",
            "save_steps",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer; got {value!r}")
        for name in ("warmup", "batch_warmup"):
            if getattr(self, name) < 0:
                raise ConfigError(f"`{name}` must be >= 0; got {getattr(self, name)!r}")
        if self.epochs <= 0:
            raise ConfigError(f"`epochs` must be positive; got {self.epochs!r}")
        if self.recover_epochs < 0:
            raise ConfigError(f"`recover_epochs` must be >= 0; got {self.recover_epochs!r}")
        unknown = [p for p in (*self.points, self.method_point) if p not in POINTS]
        if unknown:
            raise ConfigError(f"`points`: unknown operating point {unknown[0]!r}; known: {', '.join(POINTS)}")
        if not self.points:
            raise ConfigError("`points` must name at least one operating point")
        if self.structure not in STRUCTURES:
            raise ConfigError(f"`structure` must be one of {', '.join(STRUCTURES)}; got {self.structure!r}")
        if self.vocab not in VOCAB:
            raise ConfigError(f"`vocab` must be one of {', '.join(VOCAB)}; got {self.vocab!r}")
        if not self.threads or any(t < 1 for t in self.threads):
            raise ConfigError(f"`threads` must be positive integers, e.g. 1,2; got {self.threads!r}")
        if self.eval_rows is not None and self.eval_rows < 1:
            raise ConfigError(f"`eval_rows` must be a positive integer; got {self.eval_rows!r}")
        if self.lr is not None and not 0 < self.lr < 1:
            raise ConfigError(f"`lr` must be in (0, 1); got {self.lr!r}")
        if self.recover not in RECOVER:
            raise ConfigError(f"`recover` must be one of {', '.join(RECOVER)}; got {self.recover!r}")
        from compressor.sensitivity.config import SCORER_NAMES  # torch-free

        if self.scorer not in SCORER_NAMES:
            raise ConfigError(f"`scorer` must be one of {', '.join(SCORER_NAMES)}; got {self.scorer!r}")

    @property
    def target_threads(self) -> int:
        """The issue's targets are stated at 2 threads; without 2 in `threads`, the largest count stands in."""
        return 2 if 2 in self.threads else max(self.threads)

    @property
    def recover_steps(self) -> int:
        """Distillation steps: `recover_epochs` over the training sample (0 when there is no distillation)."""
        if "distill" not in self.recover or self.recover_epochs == 0:
            return 0
        return max(1, round(self.train_samples * self.recover_epochs / self.batch_size))

    @property
    def recovery(self) -> str:
        """`recover` without the distillation when `recover_epochs` is 0."""
        if self.recover_steps or "distill" not in self.recover:
            return self.recover
        return self.recover.replace("+distill", "") if "+" in self.recover else "none"
