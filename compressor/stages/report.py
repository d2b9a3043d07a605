"""The run report, from what a run directory holds: report.md, a self-contained report.html, a terminal summary.

Everything is read from disk (recipe.json, run.json, each stage's stage.json and DONE, the files stages wrote), so
a report can be rebuilt for any run directory, and `summarise_run` works on an unfinished one. The sections come
from the stages themselves (`Stage.row` for the Stages table, `Stage.sections` for the rest); this module only
orders them and adds the environment and the recipe.
"""

from __future__ import annotations

import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from compressor.stages.base import STAGES, Section, StageView
from compressor.stages.benchmark import caption, result_table
from compressor.stages.render import Block, render_html, render_markdown, text_table
from compressor.stages.rundir import DONE, RECIPE_FILE, RUN_FILE, STAGE_DIR, STAGE_FILE, read_json
from exporters.measure import machine_info

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SECTIONS = ("Result", "Stages", "Sensitivity", "Structure", "Accuracy vs latency", "Environment", "Recipe")
PACKAGES = (
    "compressor",
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "peft",
    "datasets",
    "numpy",
)
STATUS = {"skipped": "reused", "resumed": "resumed", "ran": "ran"}


def load_views(run_dir: Path) -> tuple[dict[str, Any], list[StageView]]:
    """The resolved recipe, and each stage directory (in run order) as a `StageView`."""
    run_dir = Path(run_dir)
    index = read_json(run_dir / RUN_FILE) or {}
    entries = index.get("stages") or [
        {"dir": p.name, "status": None} for p in sorted(run_dir.iterdir()) if p.is_dir() and STAGE_DIR.match(p.name)
    ]
    views: list[StageView] = []
    for entry in entries:
        stage_dir = run_dir / entry["dir"]
        info = read_json(stage_dir / STAGE_FILE) or {}
        key = info.get("key")
        if key not in STAGES:
            continue
        done = read_json(stage_dir / DONE)
        status = STATUS.get(entry.get("status"), "done") if done else "incomplete"
        views.append(
            StageView(
                dir=stage_dir,
                name=info.get("stage", entry["dir"][3:]),
                key=key,
                config=(info.get("config") or {}).get("config", {}),
                summary=(done or {}).get("summary") or {},
                seconds=(done or {}).get("seconds"),
                status=status,
                run_dir=run_dir,
                earlier=list(views),
            )
        )
    return read_json(run_dir / RECIPE_FILE) or {}, views


def stage_table(views: list[StageView]) -> tuple[list[str], list[list[str]]]:
    """# | stage | status | time | parameters | accuracy | note, one row per stage directory."""
    headers = ["#", "stage", "status", "time", "parameters", "accuracy", "note"]
    rows = []
    for view in views:
        cells = STAGES.get(view.key).row(view.summary) if view.done else {}
        rows.append(
            [
                view.dir.name[:2],
                view.name,
                view.status,
                "-" if view.seconds is None else f"{view.seconds:.1f} s",
                cells.get("params", "-"),
                cells.get("accuracy", "-"),
                cells.get("note", ""),
            ]
        )
    return headers, rows


def environment(views: list[StageView]) -> list[str]:
    """CPU, vector flags, threads (from a benchmark when one ran) and package versions, one item per line."""
    from importlib import metadata

    machine = next((v.summary.get("machine") for v in views if v.summary.get("machine")), None)
    if not machine:
        machine = machine_info(threads=0) | {"threads": None}
    lines = [
        f"CPU: {machine.get('cpu')} ({machine.get('logical_cores')} logical cores, {machine.get('usable_cores')} "
        "usable)",
        f"CPU flags: {', '.join(machine.get('cpu_flags') or []) or 'none detected'}",
        f"Benchmark threads: {machine.get('threads') or '-'}",
        f"Platform: {machine.get('platform', platform.platform())}, Python {platform.python_version()}",
    ]
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    lines.append("Versions: " + ", ".join(versions))
    return lines


def build_document(run_dir: Path) -> tuple[str, list[Section]]:
    """Title and sections (in `SECTIONS` order) of a run's report."""
    recipe, views = load_views(run_dir)
    title = f"compressor run: {recipe.get('name', Path(run_dir).name)}"
    data = recipe.get("data") or {}
    intro: list[Block] = [("p", recipe["description"])] if recipe.get("description") else []
    sample = f" (seeded sample of {data['max_train_samples']:,} rows)" if data.get("max_train_samples") else ""
    intro.append(
        (
            "p",
            f"Model `{recipe.get('model')}`; training data `{data.get('train')}`{sample}; validation data "
            f"`{data.get('eval')}`. Report written {datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        )
    )
    contributed: dict[str, list[Block]] = {name: [] for name in SECTIONS}
    for view in views:
        for title_, blocks in STAGES.get(view.key).sections(view):
            contributed[title_].extend(blocks)
    contributed["Result"] = intro + (
        contributed["Result"] or [("p", "No benchmark in this recipe (or it has not finished).")]
    )
    contributed["Stages"] = [("table", stage_table(views))]
    contributed["Environment"] = [("list", environment(views))]
    recipe_text = yaml.safe_dump(
        {k: v for k, v in recipe.items() if k != "source"}, sort_keys=False, allow_unicode=True, width=110
    )
    contributed["Recipe"] = [
        ("p", f"Resolved from `{recipe.get('source')}` (every default filled in):"),
        ("code", recipe_text),
    ]
    return title, [(name, blocks) for name, blocks in contributed.items() if blocks]


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write report.md and report.html into the run directory; returns their paths."""
    run_dir = Path(run_dir)
    title, sections = build_document(run_dir)
    md, page = run_dir / REPORT_MD, run_dir / REPORT_HTML
    md.write_text(render_markdown(title, sections, run_dir), encoding="utf-8")
    page.write_text(render_html(title, sections), encoding="utf-8")
    return md, page


def final_table(run_dir: Path) -> str | None:
    """The last benchmark's table as text, with its caption; None without one."""
    _, views = load_views(run_dir)
    bench = next((v for v in reversed(views) if v.key == "benchmark" and v.done), None)
    if bench is None:
        return None
    return text_table(*result_table(bench.summary)) + "\n" + caption(bench.summary)


def summarise_run(run_dir: Path) -> str:
    """A terminal summary of a run directory (finished or not): stages, their status, the final table, files."""
    run_dir = Path(run_dir)
    recipe, views = load_views(run_dir)
    lines = [f"run {run_dir}: recipe `{recipe.get('name', '?')}` on model `{recipe.get('model', '?')}`", ""]
    headers, rows = stage_table(views)
    lines.append(text_table(headers, rows) if rows else "no stages yet")
    unfinished = [v.dir.name for v in views if not v.done]
    if unfinished:
        lines += [
            "",
            f"unfinished: {', '.join(unfinished)}; continue with `compressor run RECIPE --out {run_dir} --resume`",
        ]
    table = final_table(run_dir)
    if table:
        lines += ["", table]
    for name in (REPORT_MD, REPORT_HTML):
        if (run_dir / name).is_file():
            lines.append(f"report: {run_dir / name}")
    return "\n".join(lines)
