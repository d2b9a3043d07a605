"""Run a benchmark sweep: recipes run with `compressor run` (resumable), the user's alternative as baselines (HF
full fine-tune → optimum fp32 / dynamic int8, bench/teacher.py and bench/baseline.py), then `compressor compare`;
the table, JSON and Pareto plot go to docs/ (the sweep's section of docs/benchmarks.md is regenerated).

    python bench/sweep.py bench/sweeps/sst2.yaml               # every run of the sweep (finished ones are kept)
    python bench/sweep.py bench/sweeps/sst2.yaml --only deep   # some runs, then the comparison of all finished
    python bench/sweep.py bench/sweeps/sst2.yaml --dev         # the sweep's development budget: no docs written

A sweep file names: `out` (its run directories), `teacher` (optional: a checkpoint, trained by bench/teacher.py
if missing; its optimum fp32/int8 exports are baselines), `baselines` (more: name → run directory or artifact),
`runs` (name, recipe, `set` overrides; `matrix` expands a run over values, rows differing only in `seed` are also
summarised together; `baseline: true` makes a run a reference row), `compare` (benchmark settings and data),
`headline` (the rows, one per seed, averaged into docs/headline.json), `targets` (checked against the headline:
accuracy_drop_pt, speedup_vs_fp32, speedup_vs_optimum_int8, size_mb), `profiles` (rows whose op profiles are
shown), `latency_reference` (the row that is the unpruned model exported like the rows planned for a latency
budget: predictions are also checked as a share of it), `dev` (overrides).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # `python bench/sweep.py`: import the repository's packages, not bench/'s neighbours
    sys.path[0] = str(ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml  # noqa: E402

from bench.baseline import export_optimum_fp32, optimum_preset, quantize_optimum  # noqa: E402
from cli.main import configure_logging  # noqa: E402
from compressor.schema import build_strict  # noqa: E402
from compressor.stages.compare import Comparison, compare, resolve, write_outputs  # noqa: E402
from compressor.stages.context import DataFiles, DataSpec  # noqa: E402
from compressor.stages.render import md_table  # noqa: E402
from compressor.stages.runner import run_pipeline  # noqa: E402
from exporters.measure import BenchmarkConfig, machine_info, profile_table  # noqa: E402


def expand(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run; a run with `matrix: {key: [values]}` becomes one run per combination, `{key}` filled in its name
    and `set` items."""
    out = []
    for run in runs:
        matrix = run.get("matrix") or {}
        for values in itertools.product(*matrix.values()):
            fill = dict(zip(matrix, values, strict=True))
            filled = {"name": run["name"].format(**fill), "set": [s.format(**fill) for s in run.get("set", [])]}
            group = run["name"].format(**(fill | {"seed": "*"})) if "seed" in fill else filled["name"]
            out.append(run | filled | {"group": group})  # a setting over its seeds
    return out


def teacher(spec: dict[str, Any]) -> Path:
    """The user's own fine-tuned checkpoint, trained with bench/teacher.py when it is not there yet."""
    path = ROOT / spec["dir"]
    if not (path / "teacher.json").is_file():
        command = [sys.executable, str(ROOT / "bench" / "teacher.py"), "--out", spec["dir"], *spec.get("args", [])]
        subprocess.run(command, check=True, cwd=ROOT)
    return path


def baselines(sweep: dict[str, Any], model: Path, out: Path) -> dict[str, Path]:
    """optimum's fp32 export of the teacher and optimum's dynamic int8 of it (what users do today)."""
    fp32, int8 = out / "optimum-fp32", out / "optimum-int8"
    if not (fp32 / "compressor.json").is_file():
        export_optimum_fp32(model, fp32, max_length=int(sweep["compare"].get("seq_len", 128)))
    if not (int8 / "compressor.json").is_file():
        quantize_optimum(fp32, int8, optimum_preset())
    return {"optimum-fp32": fp32, "optimum-int8": int8}


def verdicts(record: dict[str, Any], targets: dict[str, float]) -> list[str]:
    """One line per target the sweep names, met or not, from the headline record (accuracy drop in points against
    the teacher's export, speed-ups against both baselines, size)."""
    checks = {  # target → (value, whether the target is a ceiling, how it reads)
        "accuracy_drop_pt": (
            100 * (record["teacher_accuracy"] - record["accuracy"]),
            True,
            "accuracy within {t:g} pt of the teacher: {a:.2f} pt {side}",
        ),
        "speedup_vs_fp32": (record["speedup_vs_fp32"], False, "≥ {t:g}× faster than optimum-fp32: {v:.2f}×"),
        "speedup_vs_optimum_int8": (
            record["speedup_vs_optimum_int8"],
            False,
            "≥ {t:g}× faster than optimum-int8: {v:.2f}×",
        ),
        "size_mb": (record["size_mb"], True, "≤ {t:g} MB: {v:.2f} MB"),
    }
    lines = []
    for key, target in targets.items():
        value, ceiling, text = checks[key]
        met = value <= target if ceiling else value >= target
        line = text.format(t=target, v=value, a=abs(value), side="below" if value >= 0 else "above")
        lines.append(f"  - {line}: **{'met' if met else 'not met'}**")
    return lines


def section(
    sweep: dict[str, Any], comparison: Comparison, command: str, seconds: float, record: dict[str, Any] | None = None
) -> str:
    """The sweep's part of docs/benchmarks.md: settings, the headline against the targets, the table, per-stage
    wall time, the plot, the profiles."""
    machine = comparison.report.machine
    cfg = comparison.report.config
    lines = [
        f"## {sweep['title']}",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; rerun it to regenerate "
        "this section.",
        "",
        f"- **Machine**: {machine['cpu']}, {machine['usable_cores']} usable cores; ONNX Runtime "
        f"{machine['onnxruntime']}, {cfg.threads} thread(s), batch {cfg.batch}, sequence {cfg.seq_len} "
        f"({'real text, no padding' if cfg.fill else 'one sentence padded'}; and the real lengths where shown); "
        f"{cfg.runs} interleaved runs per artifact after {cfg.warmup} warm-up; denormals "
        f"{'flushed to zero in every session' if cfg.flush_denormals else 'kept (ONNX Runtime default)'}.",
        *[f"- {note}" for note in sweep.get("notes", [])],
        f"- **Wall time** of this invocation: {seconds / 60:.1f} min (finished runs are reused).",
    ]
    if record is not None:
        seeds = ", ".join(f"{100 * a:.2f}" for a in record["accuracy_seeds"])
        lines += [
            f"- **Headline** (mean of {', '.join(f'`{r}`' for r in record['rows'])}): accuracy "
            f"{100 * record['accuracy']:.2f} % (runs: {seeds}; spread {100 * record['accuracy_spread']:.2f} pt) "
            f"against the teacher's {100 * record['teacher_accuracy']:.2f} % and optimum int8's "
            f"{100 * record['optimum_int8_accuracy']:.2f} %; {record['speedup_vs_fp32']:.2f}× faster than "
            f"optimum-fp32 and {record['speedup_vs_optimum_int8']:.2f}× faster than optimum-int8 at p50; "
            f"{record['size_mb']:.2f} MB (also in `docs/headline.json`).",
            *verdicts(record, sweep.get("targets") or {}),
        ]
    groups: dict[str, list[str]] = {}
    for run in expand(sweep["runs"]):
        groups.setdefault(run["group"], []).append(run["name"])
    if any(len(names) > 1 for names in groups.values()):
        lines += ["", "Each setting over its rows (seeds):", "", md_table(*comparison.group_table(groups))]
    lines += [
        "",
        md_table(*comparison.table()),
        "",
        "Stages of each run (wall time as they ran):",
        "",
    ]
    for row in comparison.rows():
        if row["stages"]:
            steps = ", ".join(f"{s['name']} {s['seconds'] or 0:.0f} s" for s in row["stages"])
            lines.append(f"- `{row['name']}`: {steps}")
    lines += ["", f"![accuracy vs latency]({sweep['name']}-pareto.png)", ""]
    wanted = sweep.get("profiles")  # the rows whose profiles are shown (all profiled rows when not set)
    profiled = [
        (row["name"], row["profile"])
        for row in comparison.rows()
        if row["profile"] and (wanted is None or row["name"] in wanted)
    ]
    if profiled:
        lines += [
            f"Where the time goes: ONNX Runtime's profile (a separate profiled session, {cfg.threads} thread(s), "
            f"sequence {cfg.seq_len}), ms per run by op type and its share of the node time:",
            "",
            md_table(*profile_table(profiled)),
            "",
        ]
    return "\n".join(lines)


def write_docs(sweep: dict[str, Any], text: str, folder: Path) -> None:
    """Replace the sweep's section (between its markers) in FOLDER/benchmarks.md, or append it."""
    docs = folder / "benchmarks.md"
    start, end = f"<!-- bench:{sweep['name']} -->", f"<!-- /bench:{sweep['name']} -->"
    current = docs.read_text(encoding="utf-8") if docs.is_file() else "# Benchmarks\n"
    block = f"{start}\n{text}\n{end}"
    if start in current and end in current:
        head, rest = current.split(start, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    docs.write_text(current, encoding="utf-8")


def headline(sweep: dict[str, Any], comparison: Comparison, teacher_dir: Path, command: str) -> dict[str, Any] | None:
    """docs/headline.json: the headline rows (one compression per seed) against the full-data teacher and
    optimum's int8 of it; accuracy is their mean, with each seed's and the spread. None (and a line on stderr)
    while a headline row has not run: `--only` on other rows."""
    rows = {r["name"]: r for r in comparison.rows()}
    names = sweep["headline"]
    names = [names] if isinstance(names, str) else names
    missing = [name for name in names if name not in rows]
    if missing:
        print(f"no headline: {', '.join(missing)} not run yet (docs/headline.json left as it is)", file=sys.stderr)
        return None
    picked = [rows[name] for name in names]
    record = json.loads((teacher_dir / "teacher.json").read_text(encoding="utf-8"))
    accuracies = [r["accuracy"] for r in picked]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    return {
        "teacher_train_rows": record["train_rows"],
        "teacher_accuracy": rows["optimum-fp32"]["accuracy"],
        "optimum_int8_accuracy": rows["optimum-int8"]["accuracy"],
        "accuracy": round(mean(accuracies), 6),
        "accuracy_seeds": accuracies,
        "accuracy_spread": round(max(accuracies) - min(accuracies), 6),
        "speedup_vs_fp32": round(mean([r["speedup"]["optimum-fp32"] for r in picked]), 3),
        "speedup_vs_optimum_int8": round(mean([r["speedup"]["optimum-int8"] for r in picked]), 3),
        "size_mb": round(max(r["model_bytes"] for r in picked) / 1e6, 2),
        "threads": comparison.report.config.threads,
        "command": command,
        "rows": [r["name"] for r in picked],
        "machine": machine_info(comparison.report.config.threads)["cpu"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--only", nargs="*", default=None, help="Run only these runs (the comparison shows all).")
    parser.add_argument("--dev", action="store_true", help="The sweep's development budget; docs are not written.")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="Where the section, JSON and plot go.")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    configure_logging(args.quiet)
    sweep = yaml.safe_load(args.sweep.read_text(encoding="utf-8"))
    if args.dev:
        sweep = sweep | sweep.get("dev", {}) | {"name": sweep["name"] + "-dev"}
    out = ROOT / sweep["out"]
    start = time.perf_counter()
    teacher_dir = teacher(sweep["teacher"]) if sweep.get("teacher") else None  # None: the recipes name the model
    models = [] if teacher_dir is None else [f"model={teacher_dir}"]
    bases = {} if teacher_dir is None else baselines(sweep, teacher_dir, out)
    bases |= {name: ROOT / path for name, path in (sweep.get("baselines") or {}).items()}  # named runs/artifacts
    entries = [resolve(path, name, baseline=True) for name, path in bases.items()]
    for run in expand(sweep["runs"]):
        run_dir = out / run["name"]
        if args.only is None or run["name"] in args.only:
            overrides = [*models, *sweep.get("set", []), *run.get("set", [])]
            run_pipeline(ROOT / run["recipe"], run_dir, resume=True, overrides=overrides, quiet=args.quiet)
        if (run_dir / "run.json").is_file():
            entries.append(resolve(run_dir, run["name"], baseline=bool(run.get("baseline"))))
    settings = dict(sweep["compare"])
    data = DataFiles(build_strict(DataSpec, {"eval": str(ROOT / settings.pop("data"))}, "compare data"))
    comparison = compare(
        entries,
        build_strict(BenchmarkConfig, settings, "compare"),
        data=data.eval(),
        latency_reference=sweep.get("latency_reference"),
    )
    docs = out if args.dev else args.docs  # a development budget never lands in docs/
    write_outputs(
        comparison,
        json_path=docs / f"bench-{sweep['name']}.json",
        markdown=None,
        plot=docs / f"{sweep['name']}-pareto.png",
        root=ROOT,
    )
    print(md_table(*comparison.table()))
    if not args.dev:
        record = headline(sweep, comparison, teacher_dir, command) if sweep.get("headline") else None
        write_docs(sweep, section(sweep, comparison, command, time.perf_counter() - start, record), docs)
        if record is not None:
            (docs / "headline.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
