"""The pruning benchmark of issues 4, 7 and 8 on a fine-tuned checkpoint: sensitivity plans against magnitude
pruning at the same parameter count (no recovery), retraining-free pruning (fisher plan + reconstruction),
vocabulary pruning, and the accuracy-gated int8 export with its measured fusion choice, loaded by optimum and by
`compressor predict`.

    python bench/pruning.py                  # the merged full fine-tune of bench/sst2.py (runs/bench/merge-full)
    python bench/pruning.py --model DIR --threads 2
    python bench/pruning.py --quick          # small samples; writes OUT/docs unless --docs is given

Every step writes `--out/NAME/` and a marker `--out/NAME.done.json` (bench/stages.py): a rerun skips finished steps.
Results: the `bench:pruning` section of docs/benchmarks.md, docs/bench-pruning.json and docs/heatmap.png.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):  # everything is local
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if __package__ in (None, ""):  # run as `python bench/pruning.py`: import `bench` as `python -m bench.pruning` would
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import pruning_report  # noqa: E402
from bench.entry import run_main  # noqa: E402
from bench.pruning_steps import (  # noqa: E402
    Bench,
    export_step,
    loader_checks,
    measure,
    plan_step,
    reconstruct_step,
    uniform_step,
    unpruned_step,
)
from bench.stages import StageCache  # noqa: E402
from compressor.errors import ConfigError  # noqa: E402

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT / "samples" / "data" / "sst2"
DEFAULT_MODEL = ROOT / "runs" / "bench" / "merge-full"  # bench/steps.py merge_stage("full") under sst2's --out
PARAMS_BUDGET = "params=0.6"  # issue 4
# issue 7: ≥ 30 % FLOPs removed; 0.6 also feeds the vocabulary/export steps; 0.4, a smaller encoder, shows how the
# vocabulary's share of the artifact (and so what vocabulary pruning can cut) grows as the encoder shrinks
FLOPS_BUDGETS = ("flops=0.7", "flops=0.6", "flops=0.4")
PLAN_SCORERS = ("fisher", "head-gradient", "magnitude")
EXPORT_FLOPS = "flops=0.6"
VOCAB_EXPORTS = {"int8-vocab": "unk", "int8-vocab-nearest": "nearest"}  # artifact → fallback of dropped token ids
SMALL_FLOPS = "flops=0.4"
PREDICT_SENTENCES = 8
QUICK: dict[str, Any] = {
    "plan_samples": 32,
    "reconstruct_samples": 64,
    "eval_rows": 64,
    "timing_runs": 3,
    "runs": 5,
    "out": ROOT / "runs" / "bench-pruning-quick",
}


@dataclass(kw_only=True)
class PruningBenchConfig:
    kind: ClassVar[str] = "bench-pruning"
    version: ClassVar[int] = 1

    model: Path = field(default=DEFAULT_MODEL, metadata={"help": "Merged fine-tuned checkpoint directory."})
    data: Path = field(default=SST2 / "train.tsv", metadata={"help": "Training data: scoring, reconstruction, vocab."})
    eval_data: Path = field(default=SST2 / "validation.tsv", metadata={"help": "Validation data (872 rows)."})
    out: Path = field(default=ROOT / "runs" / "bench-pruning", metadata={"help": "Stage cache directory."})
    docs: Path = field(default=ROOT / "docs", metadata={"help": "Where benchmarks.md, the JSON and heatmap go."})
    threads: int = field(default=1, metadata={"help": "Threads of PyTorch and ONNX Runtime."})
    seq_len: int = field(default=128, metadata={"help": "Max tokens, and the sequence length of FLOPs and timings."})
    plan_samples: int = field(default=512, metadata={"help": "Training rows the data scorers use."})
    reconstruct_samples: int = field(default=1024, metadata={"help": "Training sentences of the reconstruction."})
    eval_rows: int | None = field(default=None, metadata={"help": "Validation rows scored (default: all)."})
    timing_runs: int = field(default=30, metadata={"help": "Timed runs of the export's fused-vs-plain choice."})
    runs: int = field(default=50, metadata={"help": "Timed runs per artifact in the final benchmark."})
    seed: int = field(default=0, metadata={"help": "Seed of every sample drawn."})
    quick: bool = field(default=False, metadata={"help": "A small development run (recorded in the output)."})
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})
    command: str = field(default="", metadata={"help": "The command line, recorded in the output."})

    def __post_init__(self) -> None:
        for name in ("threads", "seq_len", "plan_samples", "reconstruct_samples", "timing_runs", "runs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer; got {value!r}")
        if self.eval_rows is not None and self.eval_rows < 1:
            raise ConfigError(f"`eval_rows` must be a positive integer; got {self.eval_rows!r}")
        if not (Path(self.model) / "config.json").is_file():
            raise ConfigError(
                f"`model`: no checkpoint at {self.model}; run `python bench/sst2.py` (its merge-full stage) "
                "or pass --model DIR (a merged fine-tuned checkpoint)"
            )
        for name in ("data", "eval_data"):
            if not Path(getattr(self, name)).exists():
                raise ConfigError(f"`{name}`: file {getattr(self, name)} not found")


# --- the run -----------------------------------------------------------------------------------------------------


def prepare(cfg: PruningBenchConfig) -> Bench:
    """Read the data against the checkpoint's label map; fingerprint model and data for the stage configs."""
    from compressor.checkpoint import model_fingerprint, read_config
    from compressor.data import load_data
    from compressor.fs import file_sha256

    id2label = {int(k): str(v) for k, v in (read_config(Path(cfg.model)).get("id2label") or {}).items()} or None
    train = load_data(cfg.data, id2label=id2label)
    val = load_data(cfg.eval_data, id2label=id2label or train.id2label).head(cfg.eval_rows)
    inputs = {
        "model": model_fingerprint(Path(cfg.model)),
        "data": file_sha256(Path(cfg.data))[:16],
        "eval_data": file_sha256(Path(cfg.eval_data))[:16],
        "eval_rows": len(val),
        "seq_len": cfg.seq_len,
    }
    return Bench(cfg, StageCache(Path(cfg.out)), train, val, inputs)


def run(cfg: PruningBenchConfig) -> dict[str, Any]:
    """Every step (cached), the artifact measurements, then the docs: section, JSON, heatmap."""
    import torch

    start, torch_threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        b = prepare(cfg)
        unpruned = unpruned_step(b)
        plans = {scorer: plan_step(b, scorer, PARAMS_BUDGET) for scorer in PLAN_SCORERS}
        uniform = uniform_step(b, plans["fisher"])
        free = {}
        for budget in FLOPS_BUDGETS:
            plan = plan_step(b, "fisher", budget)
            free[budget] = {"plan": plan, "reconstruct": reconstruct_step(b, plan)}
        pruned = free[EXPORT_FLOPS]["reconstruct"]
        exports = {
            "fp32": export_step(b, pruned, "fp32", quantize="none", fuse="off", vocab=None),
            "int8": export_step(b, pruned, "int8", quantize="dynamic", fuse="auto", vocab=None),
            **{
                name: export_step(b, pruned, name, quantize="dynamic", fuse="auto", vocab=fallback)
                for name, fallback in VOCAB_EXPORTS.items()
            },
        }
        small = free[SMALL_FLOPS]["reconstruct"]
        exports["int8-small"] = export_step(b, small, "int8-small", quantize="dynamic", fuse="auto", vocab=None)
        exports["int8-small-vocab-nearest"] = export_step(
            b, small, "int8-small-vocab-nearest", quantize="dynamic", fuse="auto", vocab="nearest"
        )
        measured = measure(b, {name: rec.path for name, rec in exports.items()})
        checks = loader_checks(exports["int8"].path, b.val.texts[:PREDICT_SENTENCES], cfg.threads)
    finally:
        torch.set_num_threads(torch_threads)
    result = {
        "kind": "bench-pruning",
        "version": 1,
        "command": cfg.command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": cfg.quick,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k != "command"},
        "machine": measured["machine"],
        "eval_rows": len(b.val),
        "train_rows": len(b.train),
        "unpruned": unpruned.result,
        "issue4": {"plans": {s: r.result for s, r in plans.items()}, "uniform": uniform.result},
        "issue7": {k: {"plan": v["plan"].result, "reconstruct": v["reconstruct"].result} for k, v in free.items()},
        "exports": {name: rec.result for name, rec in exports.items()},
        "artifacts": measured["artifacts"],
        "loaders": checks,
        "steps": {name: {"seconds": r.seconds, "cached": r.cached} for name, r in b.cache.records.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    result["targets"] = pruning_report.targets(result)
    pruning_report.write_outputs(result, Path(cfg.docs), heatmap=plans["fisher"].path / "heatmap.png")
    return result


# --- command line ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> PruningBenchConfig:
    parser = argparse.ArgumentParser(
        prog="python bench/pruning.py",
        description=__doc__.split("\n\n")[0],
        epilog="Example: python bench/pruning.py --model runs/bench/merge-full --threads 2",
    )
    add = parser.add_argument
    add("--model", type=Path, help=f"merged fine-tuned checkpoint directory (default {DEFAULT_MODEL})")
    add("--data", type=Path, help="training data (default: the bundled SST-2 train.tsv)")
    add("--eval-data", type=Path, help="validation data (default: the bundled SST-2 validation.tsv)")
    add("--out", type=Path, help="stage cache (default runs/bench-pruning; with --quick runs/bench-pruning-quick)")
    add(
        "--docs",
        type=Path,
        help="directory of benchmarks.md, bench-pruning.json, heatmap.png (default docs/; with --quick: OUT/docs)",
    )
    add("--threads", type=int, help="PyTorch and ONNX Runtime threads (default 1)")
    add("--seq-len", type=int, help="max tokens; sequence length of the FLOPs budgets and timings (default 128)")
    add("--plan-samples", type=int, help="training rows of the data scorers (default 512)")
    add("--reconstruct-samples", type=int, help="training sentences of the reconstruction (default 1024)")
    add("--eval-rows", type=int, help="validation rows scored (default: all)")
    add("--seed", type=int, help="seed of every sample (default 0)")
    add("--quick", action="store_true", help="small development run (tiny samples, few timing runs)")
    add("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None and v is not False}
    values = ({k: v for k, v in QUICK.items() if k not in given} if args.quick else {}) | given
    if args.quick and "docs" not in given:  # a development run never overwrites the recorded section
        values["docs"] = Path(values["out"]) / "docs"
    command = "python bench/pruning.py" + ("" if not argv else " " + shlex.join(argv))
    return PruningBenchConfig(**values, command=command)


def main(argv: list[str] | None = None) -> int:
    return run_main(argv, parse_args, run, pruning_report.summary)


if __name__ == "__main__":
    raise SystemExit(main())
