"""`compressor benchmark`: artifacts side by side — latency, throughput, size, accuracy (regression: Pearson,
Spearman, MSE) — in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli._options import QuietOpt, config_options, labelled_data
from compressor.stages.context import DataSpec
from exporters.measure import BenchmarkConfig

DATA = labelled_data("Labelled data: accuracy (regression: Pearson, Spearman, MSE), and real sentences as inputs.")


@config_options(config=BenchmarkConfig, data=DATA)
def command(
    artifacts: Annotated[list[Path], typer.Argument(help="Artifact directories; the first is the reference.")],
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON to this file (`-`: print it instead).")
    ] = None,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write accuracy vs p50 latency as a PNG.")] = None,
    quiet: QuietOpt = False,
    *,
    config: BenchmarkConfig,
    data: DataSpec,
) -> None:
    """Benchmark ARTIFACTS interleaved in one process: p50/p90/p99 ms, throughput, size, accuracy, speed-up.

    Example: compressor benchmark runs/dense runs/small --data samples/data/sst2/validation.tsv --plot b.png
    """
    from cli._options import setup

    setup(quiet or str(json_path) == "-")
    from compressor.errors import ConfigError
    from compressor.stages.context import DataFiles
    from exporters.measure import benchmark, plot
    from exporters.runtime import artifact_task

    if plot_path is not None and data.eval is None:
        raise ConfigError("--plot shows accuracy against latency: pass --data with labelled examples")
    task = artifact_task(artifacts[0]) if artifacts else None  # a regression artifact reads the labels as scores
    report = benchmark(artifacts, config, data=DataFiles(data).eval(task=task))
    if json_path is not None and str(json_path) == "-":
        import json

        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    print_table(report)
    if json_path is not None:
        report.write_json(json_path)
        typer.echo(f"report written to {json_path}")
    if plot_path is not None:
        plot(report, plot_path)
        typer.echo(f"plot written to {plot_path}")


def print_table(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg, machine = report.config, report.machine
    title = (
        f"latency in ms at batch {cfg.batch}, seq {cfg.seq_len}, {cfg.threads} threads, {cfg.runs} runs; "
        f"{machine['cpu']} ({', '.join(machine['cpu_flags']) or 'no vector flags'})"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("artifact", no_wrap=True)
    regression = report.task == "regression"  # Pearson, Spearman and MSE against the labels instead of accuracy
    quality = ("pearson", "spearman", "mse") if regression else ("accuracy",)
    for col in (*quality, "p50", "p90", "p99", "ex/s", "MB", "speed-up", "smaller"):
        table.add_column(col, justify="right", no_wrap=True)
    has_real = any(r.real is not None for r in report.results)
    if has_real:
        table.add_column("p50 real", justify="right", no_wrap=True)
    for r in report.results:
        if regression:
            cells = ["-"] * 3 if r.regression is None else [f"{r.regression[k]:.4f}" for k in quality]
            if r.score_delta is not None and r is not report.results[0]:
                cells[0] += f" ({r.score_delta / 100:+.4f})"
        else:
            cells = ["-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%"]
            if r.accuracy_delta is not None and r is not report.results[0]:
                cells[0] += f" ({r.accuracy_delta:+.2f})"
        row = [
            r.name,
            *cells,
            f"{r.fixed.p50:.2f}",
            f"{r.fixed.p90:.2f}",
            f"{r.fixed.p99:.2f}",
            f"{r.fixed.throughput:.1f}",
            f"{r.model_bytes / 1e6:.2f}",
            f"{r.speedup_p50:.2f}×",
            f"{r.size_ratio:.2f}×",
        ]
        if has_real:
            row.append("-" if r.real is None else f"{r.real.p50:.2f}")
        table.add_row(*row)
    console = Console(soft_wrap=True)
    if not console.is_terminal:  # piped output: do not squeeze the table into 80 columns
        console = Console(soft_wrap=True, width=160)
    console.print(table)
    if any(r.profile for r in report.results):
        from exporters.measure import profile_table

        headers, rows = profile_table([(r.name, r.profile) for r in report.results])
        ops = Table(title="ONNX Runtime profile: ms per run by op type (share of node time)", title_justify="left")
        for i, header in enumerate(headers):
            ops.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
        for row in rows:
            ops.add_row(*row)
        console.print(ops)
