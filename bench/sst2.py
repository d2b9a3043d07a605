"""The SST-2 benchmark table: what users do today (HF full fine-tune → optimum fp32 / dynamic int8) against our
pipeline (merge → prune + recovery → fused, gated int8), on the bundled MiniLM, in one run on one machine.

    python bench/sst2.py                 # the full table (about 60–90 min on 2 cores; stages are cached)
    python bench/sst2.py --quick         # a small development run (minutes)
    python -m bench.sst2 --help

Every stage writes `--out/NAME/` and a marker `--out/NAME.done.json` (bench/stages.py): a rerun only does what is
missing or stale. Results: `docs/benchmarks.md` (the section between the `bench:sst2` markers is regenerated),
`docs/pareto.png` and `docs/bench-sst2.json`.
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
from typing import Any

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):  # everything is local
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if __package__ in (None, ""):  # run as `python bench/sst2.py`: import `bench` as `python -m bench.sst2` would, and
    # take bench/ itself off the path so its modules never shadow installed packages
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import report  # noqa: E402
from bench.config import POINTS, QUICK, SST2_TRAIN_ROWS, STRUCTURES, VOCAB, BenchConfig  # noqa: E402
from bench.entry import run_main  # noqa: E402
from bench.stages import StageCache, StageRecord  # noqa: E402
from bench.steps import (  # noqa: E402
    Data,
    export_stage,
    finetune_stage,
    merge_stage,
    optimum_stages,
    plan_stage,
    prepare_data,
    prune_stage,
)
from compressor.errors import ConfigError  # noqa: E402

logger = logging.getLogger(__name__)


@dataclass
class Row:
    """One line of the table: an artifact and how it was made."""

    name: str
    kind: str  # baseline | point | method
    artifact: Path
    label: str
    method: str = "full"
    point: str | None = None
    stages: list[StageRecord] = field(default_factory=list)


# --- the pipeline ------------------------------------------------------------------------------------------------


def registered_methods() -> list[str]:
    from compressor.methods import METHODS

    return list(METHODS.names())


def build(cfg: BenchConfig, cache: StageCache, data: Data) -> list[Row]:
    """Run (or reuse) every stage; return the rows in table order: baselines, operating points, methods."""
    methods = list(cfg.methods) if cfg.methods is not None else registered_methods()
    known = registered_methods()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ConfigError(f"`methods`: unknown method {unknown[0]!r}; registered: {', '.join(known)}")

    ft_full = finetune_stage(cfg, cache, data, "full")
    merged_full = merge_stage(cache, data, ft_full, "full")
    fp32, int8 = optimum_stages(cfg, cache, merged_full)
    rows = [
        Row(
            "optimum-fp32",
            "baseline",
            fp32.path,
            "HF full FT → optimum ONNX fp32",
            stages=[ft_full, merged_full, fp32],
        ),
        Row(
            "optimum-int8",
            "baseline",
            int8.path,
            f"HF full FT → optimum dynamic int8 ({int8.result['preset']})",
            stages=[ft_full, merged_full, int8],
        ),
    ]

    def compress(ft: StageRecord, merged: StageRecord, method: str, point: str) -> list[StageRecord]:
        plan = plan_stage(cfg, cache, data, merged, method, point)
        pruned = prune_stage(cfg, cache, data, merged, plan, method, point)
        history = [ft, merged, *([plan] if plan else []), pruned]
        exported = export_stage(cfg, cache, data, pruned, f"{method}-{point}", history)
        return [*history, exported]

    for point in cfg.points:
        heads, ffn = POINTS[point]
        stages = compress(ft_full, merged_full, "full", point)
        rows.append(
            Row(
                f"ours-{point}",
                "point",
                stages[-1].path,
                f"ours {point}: full FT, heads −{heads:.0%}, FFN −{ffn:.0%}, int8",
                point=point,
                stages=stages,
            )
        )
    for method in methods:
        if method == "full":
            ft, merged = ft_full, merged_full
        else:
            ft = finetune_stage(cfg, cache, data, method)
            merged = merge_stage(cache, data, ft, method)
        stages = compress(ft, merged, method, cfg.method_point)
        rows.append(
            Row(
                f"{method}-{cfg.method_point}",
                "method",
                stages[-1].path,
                f"{method} → merge → {cfg.method_point} → int8",
                method=method,
                point=cfg.method_point,
                stages=stages,
            )
        )
    return rows


def measure(cfg: BenchConfig, rows: list[Row], data: Data) -> dict[str, Any]:
    """Benchmark every distinct artifact, interleaved in this process, at each thread count.

    Per thread count: batch 1 at `seq_len` and at real sentence lengths, then `throughput_batch` at both.
    Accuracy is scored once, on every validation row (the other passes score one row: benchmark() always scores).
    """
    from exporters.measure import BenchmarkConfig, benchmark

    paths = list(dict.fromkeys(r.artifact for r in rows))
    out: dict[str, Any] = {"artifacts": [str(p) for p in paths], "accuracy": {}, "latency": {}, "machine": None}
    for t in cfg.threads:
        passes = {}
        for key, batch, runs, warmup in (
            ("b1", 1, cfg.runs, cfg.warmup),
            ("bN", cfg.throughput_batch, cfg.batch_runs, cfg.batch_warmup),
        ):
            score_all = not out["accuracy"] and key == "b1"
            bcfg = BenchmarkConfig(
                threads=t,
                batch=batch,
                seq_len=cfg.seq_len,
                real_lengths=True,
                runs=runs,
                warmup=warmup,
                eval_rows=None if score_all else 1,
                seed=cfg.seed,
            )
            logger.info("benchmark: %d artifacts, %d threads, batch %d", len(paths), t, batch)
            rep = benchmark(paths, bcfg, data=data.val)
            out["machine"] = out["machine"] or rep.machine
            if score_all:
                out["accuracy"] = {str(p): r.accuracy for p, r in zip(paths, rep.results, strict=True)}
            for p, r in zip(paths, rep.results, strict=True):
                entry = passes.setdefault(str(p), {"model_bytes": r.model_bytes})
                entry[f"{key}_fixed"] = asdict(r.fixed)
                entry[f"{key}_real"] = asdict(r.real) if r.real is not None else None
        out["latency"][str(t)] = passes
    return out


def assemble(
    cfg: BenchConfig,
    rows: list[Row],
    measured: dict[str, Any],
    cache: StageCache,
    seconds: dict[str, float],
    data: Data,
) -> dict[str, Any]:
    """The JSON document behind the table: rows with their numbers, targets, machine, budget and timings."""
    result_rows = []
    for row in rows:
        key = str(row.artifact)
        ft = next(s for s in row.stages if s.name.startswith("ft-"))
        merge = next(s for s in row.stages if s.name.startswith("merge-"))
        prune = next((s for s in row.stages if s.name.startswith("prune-")), None)
        export = row.stages[-1]
        metrics = ft.result["metrics"]
        result_rows.append(
            {
                "name": row.name,
                "kind": row.kind,
                "label": row.label,
                "method": row.method,
                "point": row.point,
                "artifact": key,
                "accuracy": measured["accuracy"][key],
                "finetune_accuracy": merge.result["eval_accuracy"],
                "pruned_fp32_accuracy": export.result.get("pruned_fp32_accuracy"),
                "model_bytes": measured["latency"][str(cfg.threads[0])][key]["model_bytes"],
                "trainable_parameters": ft.result["trainable"],
                "parameters": ft.result["total"],
                "parameters_after": prune.result["report"]["params_after"] if prune else ft.result["total"],
                "finetune_seconds": float(metrics.get("train_seconds", 0.0)),
                "finetune_lr": ft.result.get("lr"),  # None in stages cached before the lr was recorded
                "recover_seconds": float(prune.result.get("recover_seconds", 0.0)) if prune else 0.0,
                "structure": prune.result["report"].get("structure") if prune else None,
                "export": export.result,
                "latency": {t: measured["latency"][t][key] for t in measured["latency"]},
            }
        )
    ft_full = cache.records["ft-full"]
    rate = ft_full.result["metrics"].get("train_seconds", 0.0) / max(len(data.train) * cfg.epochs, 1)
    result = {
        "kind": "bench-sst2",
        "version": 1,
        "command": cfg.command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": cfg.quick,
        "machine": measured["machine"],
        "threads": list(cfg.threads),
        "target_threads": cfg.target_threads,
        "budget": {
            "train_samples": len(data.train),
            "train_rows_available": data.train_rows,
            "issue_train_rows": SST2_TRAIN_ROWS,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "recover": cfg.recovery,
            "recover_steps": cfg.recover_steps,
            "recover_epochs": cfg.recover_epochs,
            "seconds_per_example_full_ft": rate,
            "estimated_seconds_full_epoch": rate * SST2_TRAIN_ROWS,
        },
        "settings": {
            k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(cfg).items()
            if k not in ("command",)
        },
        "eval_rows": len(data.val),
        "rows": result_rows,
        "stages": {name: {"seconds": r.seconds, "cached": r.cached} for name, r in cache.records.items()},
        "seconds": seconds,
    }
    result["targets"] = report.evaluate_targets(result)
    return result


def run(cfg: BenchConfig) -> dict[str, Any]:
    """The whole benchmark: stages (cached) → interleaved measurements → docs (table, plot, JSON)."""
    start = time.perf_counter()
    cache = StageCache(Path(cfg.out), rerun=cfg.rerun)
    data = prepare_data(cfg)
    rows = build(cfg, cache, data)
    built = time.perf_counter()
    measured = measure(cfg, rows, data)
    done = time.perf_counter()
    stage_seconds = sum(r.seconds for r in cache.records.values())
    seconds = {
        "this_run_stages": round(built - start, 1),
        "benchmark": round(done - built, 1),
        "all_stages_when_run": round(stage_seconds, 1),
        "full_pipeline_estimate": round(stage_seconds + done - built, 1),
    }
    result = assemble(cfg, rows, measured, cache, seconds, data)
    report.write_outputs(result, Path(cfg.docs))
    return result


# --- command line ------------------------------------------------------------------------------------------------


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_args(argv: list[str]) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python bench/sst2.py",
        description=__doc__.split("\n\n")[0],
        epilog="Example: python bench/sst2.py --quick --threads 1,2",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="small development run (fewer rows, methods and repetitions)")
    add("--out", type=Path, help="stage cache directory (default runs/bench, runs/bench-quick with --quick)")
    add(
        "--docs",
        type=Path,
        help="directory of benchmarks.md, pareto.png, bench-sst2.json (default docs/; with --quick: OUT/docs)",
    )
    add("--model", help="checkpoint directory or `minilm` (default)")
    add("--train-file", type=Path, help="training data (default: the bundled SST-2 train.tsv)")
    add("--eval-file", type=Path, help="validation data (default: the bundled SST-2 validation.tsv)")
    add("--threads", type=_csv, help="ONNX Runtime thread counts, e.g. 1,2 (default)")
    add("--train-samples", type=int, help="fixed training budget: rows per fine-tuning run (default 8000)")
    add("--epochs", type=float, help="epochs over the training sample (default 1)")
    add("--lr", type=float, help="fine-tuning learning rate (default: each method's own)")
    add("--methods", type=_csv, help="comma-separated methods with a row (default: every registered method)")
    add("--points", type=_csv, help=f"operating points (default: {','.join(POINTS)})")
    add("--structure", choices=STRUCTURES, help="plan (sensitivity, default) or uniform fractions")
    add("--scorer", help="sensitivity scorer of the plans (default fisher)")
    add("--recover", help="recovery after pruning: distill (default), reconstruct, reconstruct+distill, none")
    add("--recover-epochs", type=float, help="distillation epochs over the training sample (default 0.5)")
    add("--vocab", choices=VOCAB, help="vocabulary pruning to the training file's tokens (train, default) or none")
    add("--fuse", choices=("auto", "on", "off"), help="ORT transformer fusion of our exports (default auto)")
    add("--seq-len", type=int, help="fixed sequence length of the latency rows and max tokens (default 128)")
    add("--runs", type=int, help="timed runs per artifact at batch 1 (default 200)")
    add("--eval-rows", type=int, help="validation rows to score (default: all 872)")
    add("--seed", type=int, help="seed (default 42)")
    add("--rerun", type=_csv, help="stage names or prefixes to run again, e.g. export-,optimum-")
    add("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    given = {k: v for k, v in vars(args).items() if v is not None and v is not False}
    if "threads" in given:
        try:
            given["threads"] = tuple(int(t) for t in given["threads"])
        except ValueError:
            parser.error(f"--threads takes integers, e.g. 1,2; got {args.threads!r}")
    values = ({k: v for k, v in QUICK.items() if k not in given} if args.quick else {}) | given
    if args.quick and "docs" not in given:  # a development run never overwrites the recorded table
        values["docs"] = Path(values["out"]) / "docs"
    command = "python bench/sst2.py" + ("" if not argv else " " + shlex.join(argv))
    return BenchConfig(**values, command=command)


def main(argv: list[str] | None = None) -> int:
    return run_main(argv, parse_args, run, report.summary)


if __name__ == "__main__":
    raise SystemExit(main())
