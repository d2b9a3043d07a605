"""The run report, from what a run directory holds: report.md, a self-contained report.html, a terminal summary.

Everything is read from disk (recipe.json, run.json, each stage's stage.json and DONE, the benchmark JSON, the
PNGs), so a report can be rebuilt for any run directory, and `summarise_run` works on an unfinished one.
Sections: result, stages (time, parameters, accuracy), sensitivity heatmap, per-layer structure before/after,
accuracy vs latency, environment, recipe.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from compressor.render import Block, render_html, render_markdown, text_table

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


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def load_run(run_dir: Path) -> dict[str, Any]:
    """The recipe, and per stage directory (in run order): its stage.json, its DONE record (None if unfinished)."""
    from compressor.rundir import DONE, RECIPE_FILE, RUN_FILE, STAGE_DIR, STAGE_FILE

    run_dir = Path(run_dir)
    index = _read(run_dir / RUN_FILE) or {}
    if index.get("stages"):
        entries = index["stages"]
    else:  # an unfinished run: no run.json yet, list the stage directories
        entries = [
            {"dir": p.name, "status": None}
            for p in sorted(run_dir.iterdir())
            if p.is_dir() and STAGE_DIR.match(p.name)
        ]
    stages = []
    for entry in entries:
        stage_dir = run_dir / entry["dir"]
        info = _read(stage_dir / STAGE_FILE) or {}
        stages.append(
            {
                "dir": entry["dir"],
                "path": stage_dir,
                "name": info.get("stage", entry["dir"][3:]),
                "kind": info.get("kind"),
                "config": info.get("config") or {},
                "status": entry.get("status"),
                "done": _read(stage_dir / DONE),
            }
        )
    return {"path": run_dir, "recipe": _read(run_dir / RECIPE_FILE) or {}, "stages": stages}


def _stage(run: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in run["stages"] if s["name"] == name), None)


def _summary(stage: dict[str, Any] | None) -> dict[str, Any]:
    return ((stage or {}).get("done") or {}).get("summary") or {}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _fmt_int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _output(stage: dict[str, Any]) -> Path:
    from compressor.rundir import OUTPUT

    return stage["path"] / OUTPUT.get(stage["kind"] or "", "")


# --- the tables ---------------------------------------------------------------------------------------------------


def stage_rows(run: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """# | stage | status | time | parameters | accuracy | output, one row per stage directory."""
    headers = ["#", "stage", "status", "time", "parameters", "accuracy", "output"]
    rows = []
    for stage in run["stages"]:
        done = stage["done"]
        summary = _summary(stage)
        # run.json says what the last invocation did: ran, resumed (after an interruption) or skipped (reused)
        status = {"skipped": "reused", "resumed": "resumed", "ran": "ran"}.get(stage["status"], "done")
        status = status if done else "incomplete"
        accuracy = summary.get("accuracy")
        if stage["kind"] == "benchmark" and summary.get("rows"):
            accuracy = summary["rows"][-1].get("accuracy")
        if stage["kind"] == "export" and accuracy is not None and summary.get("accuracy_samples"):
            acc_text = f"{_pct(accuracy)} ({summary['accuracy_samples']} rows)"
        else:
            acc_text = _pct(accuracy)
        params = _fmt_int(summary.get("params"))
        if summary.get("trainable") is not None:
            params += f" ({summary['trainable']:,} trained)"
        rows.append(
            [
                stage["dir"][:2],
                stage["name"],
                status,
                f"{done['seconds']:.1f} s" if done else "-",
                params,
                acc_text,
                str(_output(stage).relative_to(run["path"])) if stage["kind"] else "-",
            ]
        )
    return headers, rows


def result_rows(run: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """The benchmark's side-by-side table (dense fp32, dense int8, the result), or None without a benchmark."""
    rows = _summary(_stage(run, "benchmark")).get("rows")
    if not rows:
        return None
    headers = ["artifact", "accuracy", "p50 ms", "p90 ms", "MB", "speed-up", "smaller"]
    out = []
    for r in rows:
        acc = _pct(r.get("accuracy"))
        if r.get("accuracy_delta") is not None and r is not rows[0]:
            acc += f" ({r['accuracy_delta']:+.2f})"
        out.append(
            [
                r["name"],
                acc,
                f"{r['p50_ms']:.2f}",
                f"{r['p90_ms']:.2f}",
                f"{r['model_bytes'] / 1e6:.2f}",
                f"{r['speedup_p50']:.2f}x",
                f"{r['size_ratio']:.2f}x",
            ]
        )
    return headers, out


def _benchmark_caption(run: dict[str, Any]) -> str | None:
    stage = _stage(run, "benchmark")
    if stage is None or not stage["done"]:
        return None
    cfg = stage["config"].get("benchmark", {}).get("fields", {})
    rows = _summary(stage).get("rows") or [{}]
    return (
        f"Latency: p50 of {cfg.get('runs')} interleaved runs at batch {cfg.get('batch')}, sequence length "
        f"{cfg.get('seq_len')}, {cfg.get('threads')} threads; accuracy on {rows[0].get('eval_rows')} "
        "validation rows."
    )


def _structure_from_config(config: dict[str, Any]) -> list[dict[str, int]]:
    from compressor.inspection import layer_rows

    structure = config.get("compressor_structure")
    if structure:
        return layer_rows(structure)
    heads, ffn = int(config.get("num_attention_heads", 0)), int(config.get("intermediate_size", 0))
    return [
        {"layer": i, "source": i, "heads": heads, "intermediate": ffn}
        for i in range(int(config.get("num_hidden_layers", 0)))
    ]


def _model_config(ref: str | None) -> dict[str, Any] | None:
    if not ref:
        return None
    if ref == "minilm":
        from compressor.checkpoint import resolve_model_path

        ref = str(resolve_model_path(ref))
    data = _read(Path(ref) / "config.json")
    return data if isinstance(data, dict) else None


def structure_rows(run: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Per source layer: heads and FFN width before (the unpruned model) and after (the exported model)."""
    first = _stage(run, "prune") or _stage(run, "export")
    if first is None:
        return None
    before_cfg = _model_config(first["config"].get("model"))
    last = _stage(run, "export")
    after_cfg = None
    if last is not None and last["done"]:
        after_cfg = _read(_output(last) / "config.json")
    elif first["name"] == "prune" and first["done"]:
        after_cfg = _read(_output(first) / "config.json")
    if before_cfg is None:
        return None
    before = _structure_from_config(before_cfg)
    after = {r["source"]: r for r in _structure_from_config(after_cfg)} if after_cfg else {}
    headers = ["layer", "heads before", "heads after", "FFN before", "FFN after"]
    rows = []
    for r in before:
        kept = after.get(r["source"])
        if after_cfg is None:
            heads_after = ffn_after = "-"
        elif kept is None:
            heads_after = ffn_after = "dropped"
        else:
            heads_after, ffn_after = str(kept["heads"]), str(kept["intermediate"])
        rows.append([str(r["source"]), str(r["heads"]), heads_after, str(r["intermediate"]), ffn_after])
    return headers, rows


def environment(run: dict[str, Any]) -> list[str]:
    """CPU, vector flags, threads (from the benchmark when it ran) and package versions, one item per line."""
    from importlib import metadata

    machine = _summary(_stage(run, "benchmark")).get("machine")
    if not machine:
        from exporters.measure import machine_info

        machine = machine_info(threads=0) | {"threads": None}
    lines = [
        f"CPU: {machine.get('cpu')} ({machine.get('logical_cores')} logical cores, {machine.get('usable_cores')} "
        "usable)",
        f"CPU flags: {', '.join(machine.get('cpu_flags') or []) or 'none detected'}",
        f"Benchmark threads: {machine.get('threads') if machine.get('threads') else '-'}",
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


# --- the document ---------------------------------------------------------------------------------------------------


def build_document(run_dir: Path) -> tuple[str, list[tuple[str, list[Block]]]]:
    """Title and sections (in `SECTIONS` order) of a run's report."""
    from compressor.pipeline import PLOT_FILE

    run = load_run(run_dir)
    recipe = run["recipe"]
    title = f"compressor run: {recipe.get('name', Path(run_dir).name)}"
    intro: list[Block] = []
    if recipe.get("description"):
        intro.append(("p", recipe["description"]))
    data = recipe.get("data") or {}
    rows = (_summary(_stage(run, "finetune")).get("metrics") or {}).get("train_examples") or data.get(
        "max_train_samples"
    )
    intro.append(
        (
            "p",
            f"Model `{recipe.get('model')}`; training data `{data.get('train')}`"
            + (f" (seeded sample of {rows:,} rows)" if data.get("max_train_samples") and rows else "")
            + f"; validation data `{data.get('eval')}`. "
            f"Report written {datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        )
    )
    result = result_rows(run)
    result_blocks = intro + (
        [("table", result), ("p", _benchmark_caption(run))]
        if result
        else [("p", "No benchmark in this recipe (or it has not finished).")]
    )
    stage_blocks: list[Block] = [("table", stage_rows(run))]

    analyse = _stage(run, "analyse")
    if analyse is not None and analyse["done"]:
        summary = _summary(analyse)
        sens: list[Block] = [("img", (_output(analyse) / "heatmap.png", "sensitivity heatmap"))]
        predicted = (summary.get("predicted") or {}).get("params")
        text = f"Scorer `{summary.get('scorer')}`, budget `{summary.get('budget')}`"
        if predicted:
            text += (
                f"; the plan keeps {predicted['after']:,} of {predicted['before']:,} encoder parameters "
                f"({predicted['fraction']:.1%})"
            )
        sens.append(("p", text + "."))
    else:
        sens = [("p", "No analyse stage in this recipe: pruning used fixed fractions or a given plan.")]

    structure = structure_rows(run)
    prune = _summary(_stage(run, "prune"))
    struct_blocks: list[Block] = [("table", structure)] if structure else [("p", "No model was exported.")]
    if prune.get("encoder_params_before"):
        struct_blocks.append(
            (
                "p",
                f"Encoder parameters {prune['encoder_params_before']:,} → "
                f"{prune['encoder_params_after']:,}; model parameters "
                f"{prune['params_before']:,} → {prune['params']:,}.",
            )
        )

    bench = _stage(run, "benchmark")
    plot = None if bench is None else _output(bench) / PLOT_FILE
    plot_blocks: list[Block] = (
        [("img", (plot, "accuracy vs latency"))]
        if plot and plot.is_file()
        else [("p", "No accuracy-vs-latency plot: the recipe has no benchmark stage with validation data.")]
    )

    env_blocks: list[Block] = [("list", environment(run))]
    recipe_text = yaml.safe_dump(
        {k: v for k, v in recipe.items() if k != "source"}, sort_keys=False, allow_unicode=True, width=110
    )
    recipe_blocks: list[Block] = [
        ("p", f"Resolved from `{recipe.get('source')}` (every default filled in):"),
        ("code", recipe_text),
    ]
    sections = [
        ("Result", result_blocks),
        ("Stages", stage_blocks),
        ("Sensitivity", sens),
        ("Structure", struct_blocks),
        ("Accuracy vs latency", plot_blocks),
        ("Environment", env_blocks),
        ("Recipe", recipe_blocks),
    ]
    return title, sections


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write report.md and report.html into the run directory; returns their paths."""
    run_dir = Path(run_dir)
    title, sections = build_document(run_dir)
    md, page = run_dir / REPORT_MD, run_dir / REPORT_HTML
    md.write_text(render_markdown(title, sections, run_dir), encoding="utf-8")
    page.write_text(render_html(title, sections), encoding="utf-8")
    return md, page


# --- the terminal -------------------------------------------------------------------------------------------------


def final_table(run_dir: Path) -> str | None:
    """The benchmark table (dense fp32, dense int8, the result) as text, with its caption; None without one."""
    run = load_run(run_dir)
    result = result_rows(run)
    if result is None:
        return None
    return text_table(*result) + "\n" + (_benchmark_caption(run) or "")


def summarise_run(run_dir: Path) -> str:
    """A terminal summary of a run directory (finished or not): stages, their status, the final table, files."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    recipe = run["recipe"]
    lines = [f"run {run_dir}: recipe `{recipe.get('name', '?')}` on model `{recipe.get('model', '?')}`", ""]
    headers, rows = stage_rows(run)
    lines.append(text_table(headers, rows) if rows else "no stages yet")
    unfinished = [s["dir"] for s in run["stages"] if not s["done"]]
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
