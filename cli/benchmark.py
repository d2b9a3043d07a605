"""`compressor benchmark`: artifacts side by side — latency, throughput, size, accuracy — in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli._options import LabelColOpt, PairColOpt, QuietOpt, TextColOpt


def command(
    artifacts: Annotated[list[Path], typer.Argument(help="Artifact directories; the first is the reference.")],
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Labelled data: accuracy, and real sentences as inputs.")
    ] = None,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads per session.")] = 2,
    batch: Annotated[int, typer.Option(help="Examples per latency run.")] = 1,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Fixed sequence length (inputs padded/truncated).")] = 128,
    real_lengths: Annotated[
        bool, typer.Option("--real-lengths", help="Also time the data's real sentence lengths (needs --data).")
    ] = False,
    runs: Annotated[int, typer.Option(help="Timed runs per artifact, interleaved.")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs per artifact.")] = 10,
    eval_batch_size: Annotated[
        int,
        typer.Option(
            "--eval-batch-size",
            help="Sentences per run in the accuracy pass (1 = the edge setting; dynamic int8 depends on padding).",
        ),
    ] = 1,
    eval_rows: Annotated[
        int | None, typer.Option("--eval-rows", help="Score accuracy on the first N rows only.")
    ] = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Accept ONNX dirs without compressor.json (e.g. optimum exports).")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON to this file (`-`: print it instead).")
    ] = None,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write accuracy vs p50 latency as a PNG.")] = None,
    text_column: TextColOpt = None,
    text_pair_column: PairColOpt = None,
    label_column: LabelColOpt = "label",
    quiet: QuietOpt = False,
) -> None:
    """Benchmark ARTIFACTS interleaved in one process: p50/p90/p99 ms, throughput, size, accuracy, speed-up.

    Example: compressor benchmark runs/dense runs/small --data samples/data/sst2/validation.tsv --plot b.png
    """
    from cli._options import setup

    setup(quiet)
    from compressor.errors import ConfigError
    from exporters.measure import BenchmarkConfig, benchmark, plot

    cfg = BenchmarkConfig(
        threads=threads,
        batch=batch,
        seq_len=seq_len,
        real_lengths=real_lengths,
        runs=runs,
        warmup=warmup,
        eval_batch_size=eval_batch_size,
        eval_rows=eval_rows,
        verify=not no_verify,
    )
    if plot_path is not None and data is None:
        raise ConfigError("--plot shows accuracy against latency: pass --data with labelled examples")
    labelled = None
    if data is not None:
        from compressor.data import load_data

        labelled = load_data(
            data, text_column=text_column, text_pair_column=text_pair_column, label_column=label_column
        )
    report = benchmark(artifacts, cfg, data=labelled)
    if json_path is not None and str(json_path) == "-":
        import json

        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_table(report)
    if json_path is not None:
        report.write_json(json_path)
        typer.echo(f"report written to {json_path}")
    if plot_path is not None:
        plot(report, plot_path)
        typer.echo(f"plot written to {plot_path}")


def _print_table(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg, machine = report.config, report.machine
    title = (
        f"latency in ms at batch {cfg.batch}, seq {cfg.seq_len}, {cfg.threads} threads, {cfg.runs} runs; "
        f"{machine['cpu']} ({', '.join(machine['cpu_flags']) or 'no vector flags'})"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("artifact", no_wrap=True)
    for col in ("accuracy", "p50", "p90", "p99", "ex/s", "MB", "speed-up", "smaller"):
        table.add_column(col, justify="right", no_wrap=True)
    has_real = any(r.real is not None for r in report.results)
    if has_real:
        table.add_column("p50 real", justify="right", no_wrap=True)
    for r in report.results:
        acc = "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%"
        if r.accuracy_delta is not None and r is not report.results[0]:
            acc += f" ({r.accuracy_delta:+.2f})"
        row = [
            r.name,
            acc,
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
