"""`compare`: runs and artifacts side by side with their baselines, in one benchmark (one process, interleaved):
accuracy, latency, size, speed-ups against each baseline, wall time per stage; a table, JSON and a Pareto plot.

A run directory stands for its last exported artifact, and brings its stage records (wall time per stage, what
trained); an artifact directory stands for itself. Baselines come first; ratios are given against every one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.errors import ConfigError
from compressor.stages.base import STAGES
from compressor.stages.report import load_views
from compressor.stages.rundir import is_run_dir
from exporters.measure import BenchmarkConfig, BenchmarkReport, benchmark


@dataclass
class Entry:
    """One row: an artifact, the name it is shown under, and (for a run) its stages' wall time and records."""

    name: str
    artifact: Path
    baseline: bool = False
    run: Path | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)  # name, key, seconds, summary
    predicted_ms: float | None = None  # the latency its plan predicted (a run analysed under a latency budget)
    predicted_before_ms: float | None = None  # what the same table predicted for the unpruned model


@dataclass
class Comparison:
    entries: list[Entry]
    report: BenchmarkReport
    # A row that is the unpruned model exported as the plans' rows are: predictions are also checked as ratios to
    # it, timed in the same interleaved run, which cancels the host's speed drift since the table was measured.
    latency_reference: str | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-able row per entry: the benchmark's measures, speed-ups against every baseline, stage times."""
        baselines = [(e, r) for e, r in zip(self.entries, self.report.results, strict=True) if e.baseline]
        reference = next(
            (
                r.fixed.p50
                for e, r in zip(self.entries, self.report.results, strict=True)
                if e.name == self.latency_reference
            ),
            None,
        )
        rows = []
        for entry, result in zip(self.entries, self.report.results, strict=True):
            row = {
                "name": entry.name,
                "baseline": entry.baseline,
                "artifact": str(entry.artifact),
                "run": None if entry.run is None else str(entry.run),
                "accuracy": result.accuracy,
                "metric": result.metric,  # the headline: accuracy, or pearson for regression artifacts
                "score": result.score,
                "regression": result.regression,
                "eval_rows": result.eval_rows,
                "p50_ms": result.fixed.p50,
                "p90_ms": result.fixed.p90,
                "real_p50_ms": None if result.real is None else result.real.p50,
                "real_tokens": None if result.real is None else result.real.tokens,
                "model_bytes": result.model_bytes,
                "speedup": {b.name: br.fixed.p50 / result.fixed.p50 for b, br in baselines},
                "smaller": {b.name: br.model_bytes / result.model_bytes for b, br in baselines},
                "accuracy_delta": {
                    b.name: None
                    if result.accuracy is None or br.accuracy is None
                    else 100 * (result.accuracy - br.accuracy)
                    for b, br in baselines
                },
                "score_delta": {
                    b.name: None if result.score is None or br.score is None else 100 * (result.score - br.score)
                    for b, br in baselines
                },
                "profile": result.profile,
                "predicted_ms": entry.predicted_ms,
                "predicted_miss": None if entry.predicted_ms is None else result.fixed.p50 / entry.predicted_ms - 1,
                "predicted_relative_miss": None
                if entry.predicted_ms is None or not entry.predicted_before_ms or reference is None
                else (result.fixed.p50 / reference) / (entry.predicted_ms / entry.predicted_before_ms) - 1,
                "stages": entry.stages,
                "stage_seconds": round(sum(s["seconds"] or 0 for s in entry.stages), 1),
            }
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "comparison", "benchmark": self.report.to_dict(), "rows": self.rows()}

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Headers and text cells: accuracy (regression: Pearson × 100), p50, MB, × faster and Δ points against each
        baseline, stage time."""
        baselines = [e.name for e in self.entries if e.baseline]
        rows = self.rows()
        real = any(row["real_p50_ms"] is not None for row in rows)
        metric = rows[0]["metric"] if rows else "accuracy"
        quality = "accuracy" if metric == "accuracy" else f"{metric} ×100"
        headers = ["row", quality, "p50 ms", *(["p50 ms real lengths"] if real else []), "MB"]
        predicted = any(row["predicted_ms"] is not None for row in rows)
        relative = any(row["predicted_relative_miss"] is not None for row in rows)
        if predicted:  # runs planned under a latency budget: the plan's prediction, and how far off it was
            headers += ["predicted ms", "measured vs predicted"]
        if relative:
            headers += [f"measured vs predicted, as a share of {self.latency_reference}"]
        headers += [f"× vs {b}" for b in baselines] + [f"Δ pt vs {b}" for b in baselines[:1]] + ["stages"]
        out = []
        for row in rows:
            cells = [
                row["name"],
                "-" if row["score"] is None else f"{100 * row['score']:.2f}",
                f"{row['p50_ms']:.2f}",
            ]
            if real:
                cells.append("-" if row["real_p50_ms"] is None else f"{row['real_p50_ms']:.2f}")
            cells.append(f"{row['model_bytes'] / 1e6:.1f}")
            if predicted:
                miss = row["predicted_miss"]
                cells += ["-", "-"] if miss is None else [f"{row['predicted_ms']:.2f}", f"{100 * miss:+.1f}%"]
            if relative:
                share = row["predicted_relative_miss"]
                cells.append("-" if share is None else f"{100 * share:+.1f}%")
            cells += [f"{row['speedup'][b]:.2f}" for b in baselines]
            for b in baselines[:1]:
                delta = row["score_delta"][b]
                cells.append("-" if delta is None else f"{delta:+.2f}")
            cells.append(_duration(row["stage_seconds"]) if row["stages"] else "-")
            out.append(cells)
        return headers, out

    def group_table(self, groups: dict[str, list[str]]) -> tuple[list[str], list[list[str]]]:
        """One row per group of rows (e.g. one setting over several seeds): mean accuracy, each row's, the spread
        (max − min) and the mean p50. Groups none of whose rows are in the comparison are left out."""
        by_name = {row["name"]: row for row in self.rows()}
        out = []
        for group, names in groups.items():
            members = [by_name[n] for n in names if n in by_name and by_name[n]["accuracy"] is not None]
            if not members:
                continue
            accuracies = [100 * m["accuracy"] for m in members]
            out.append(
                [
                    group,
                    f"{sum(accuracies) / len(accuracies):.2f}",
                    " / ".join(f"{a:.2f}" for a in accuracies),
                    f"{max(accuracies) - min(accuracies):.2f}",
                    f"{sum(m['p50_ms'] for m in members) / len(members):.2f}",
                ]
            )
        return ["rows", "mean accuracy", "each row", "spread (pt)", "mean p50 ms"], out


def resolve(path: Path, name: str | None = None, *, baseline: bool = False) -> Entry:
    """An entry for a run directory (its last artifact) or an artifact directory; `name=PATH` names it."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"`{path}` not found; pass a run directory (`compressor run --out`) or an artifact")
    if not is_run_dir(path):
        return Entry(name or path.name, path, baseline)
    _, views = load_views(path)
    artifacts = [v for v in views if STAGES.get(v.key).gives == "artifact" and v.done]
    if not artifacts:
        raise ConfigError(f"run `{path}` has no finished export stage; finish it with `compressor run … --resume`")
    stages = [{"name": v.name, "key": v.key, "seconds": v.seconds, "summary": v.summary} for v in views]
    before = _predicted_ms(views, "before")
    return Entry(name or path.name, artifacts[-1].out, baseline, path, stages, _predicted_ms(views), before)


def _predicted_ms(views: list[Any], which: str = "after") -> float | None:
    """The latency the run's last plan predicted after pruning (`before`: for the unpruned model), when it was made
    with a latency table."""
    for view in reversed(views):
        predicted = ((view.summary.get("plan") or {}).get("predicted") or {}).get("latency_ms")
        if view.key == "analyse" and predicted:
            return None if predicted.get(which) is None else float(predicted[which])
    return None


def compare(
    entries: list[Entry], config: BenchmarkConfig, *, data: Any = None, latency_reference: str | None = None
) -> Comparison:
    """Benchmark every entry in one process, interleaved (baselines first, so ratios are against the first).

    Args:
        latency_reference: the row that is the unpruned model, exported like the rows planned for a latency
            budget: their predictions are also checked as a share of it.
    """
    if not entries:
        raise ConfigError("pass at least one run or artifact to compare")
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two rows are called `{duplicates[0]}`; name them with NAME=PATH")
    if latency_reference is not None and latency_reference not in names:
        raise ConfigError(f"the latency reference `{latency_reference}` is not a row; name one of {', '.join(names)}")
    ordered = [e for e in entries if e.baseline] + [e for e in entries if not e.baseline]
    report = benchmark([e.artifact for e in ordered], config, data=data, names=[e.name for e in ordered])
    return Comparison(ordered, report, latency_reference)


def parse_item(item: str) -> tuple[str | None, Path]:
    """`NAME=PATH` → (NAME, PATH); a bare PATH → (None, PATH)."""
    name, sep, path = item.partition("=")
    if sep and name and "/" not in name:
        return name, Path(path)
    return None, Path(item)


def write_outputs(
    comparison: Comparison,
    *,
    json_path: Path | None,
    markdown: Path | None,
    plot: Path | None,
    root: Path | None = None,
) -> None:
    """The comparison as JSON, as a Markdown table, and as an accuracy-vs-latency plot with the Pareto front.

    Args:
        root: paths under it are recorded relative to it in the JSON (a record committed with a repository must
            not carry the absolute paths of the machine that made it).
    """
    from compressor.stages.render import md_table

    if json_path is not None:
        record = comparison.to_dict() if root is None else relative_paths(comparison.to_dict(), root)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(md_table(*comparison.table()) + "\n", encoding="utf-8")
    if plot is not None:
        pareto_plot(comparison, plot)


def relative_paths(value: Any, root: Path) -> Any:
    """`value` (JSON-ready) with every string that is a path under `root` written relative to it."""
    prefix = str(Path(root).resolve()) + os.sep
    if isinstance(value, dict):
        return {k: relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, root) for v in value]
    if isinstance(value, str) and value.startswith(prefix):
        return Path(value[len(prefix) :]).as_posix()
    return value


def pareto_plot(comparison: Comparison, path: Path) -> None:
    """Accuracy (regression: Pearson's r) vs p50 latency: baselines as squares, the rest as dots, the Pareto front
    joined by a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = comparison.rows()
    if any(r["score"] is None for r in rows):
        raise ConfigError("the plot shows accuracy against latency: compare with labelled data (--data)")
    metric = rows[0]["metric"]
    fig = Figure(figsize=(7.2, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r in rows:
        ax.scatter(r["p50_ms"], 100 * r["score"], s=40, marker="s" if r["baseline"] else "o")
        ax.annotate(r["name"], (r["p50_ms"], 100 * r["score"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = pareto_front(rows)
    ax.plot([r["p50_ms"] for r in front], [100 * r["score"] for r in front], "k--", lw=0.8, label="Pareto front")
    cfg = comparison.report.config
    ax.set_xlabel(f"p50 latency (ms), batch {cfg.batch}, seq {cfg.seq_len}, {cfg.threads} thread(s)")
    ax.set_ylabel("accuracy (%)" if metric == "accuracy" else f"{metric} × 100")
    ax.set_title(f"{metric} vs latency ({comparison.report.machine.get('cpu', 'cpu')})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(0, 1.25 * max(r["p50_ms"] for r in rows))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row beats on both latency and accuracy (regression: Pearson's r), fastest first."""
    front: list[dict[str, Any]] = []
    key = "score" if all("score" in r for r in rows) else "accuracy"
    for r in sorted(rows, key=lambda r: (r["p50_ms"], -r[key])):
        if not front or r[key] > front[-1][key]:
            front.append(r)
    return front


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
