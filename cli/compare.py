"""`compressor compare`: runs and artifacts side by side with baselines — the table, JSON and Pareto plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._options import QuietOpt, config_options, labelled_data
from compressor.stages.context import DataSpec
from exporters.measure import BenchmarkConfig

DATA = labelled_data("Labelled validation data: accuracy of every row (one sentence per run, as on the edge).")


@config_options(config=BenchmarkConfig, data=DATA)
def command(
    items: Annotated[list[str], typer.Argument(help="Run directories or artifacts, as PATH or NAME=PATH.")],
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            "--baseline",
            "-b",
            help="A baseline artifact (PATH or NAME=PATH; repeatable): ratios are given against each.",
        ),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every measure as JSON here.")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write the table as Markdown here.")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write accuracy vs p50 latency with the Pareto front (PNG).")
    ] = None,
    latency_reference: Annotated[
        str | None,
        typer.Option(
            "--latency-reference",
            help="The row that is the unpruned model, exported like the runs planned for a latency budget: their "
            "predictions are also checked as a share of it (timed in the same run, so host drift cancels).",
        ),
    ] = None,
    quiet: QuietOpt = False,
    *,
    config: BenchmarkConfig,
    data: DataSpec,
) -> None:
    """Compare runs (each by its last artifact) and artifacts with baselines, in one interleaved benchmark.

    \b
    Example:
      compressor compare runs/light runs/deep --baseline fp32=runs/optimum-fp32 \\
        --baseline int8=runs/optimum-int8 --data samples/data/sst2/validation.tsv --threads 1 --plot pareto.png
    """
    from cli._options import setup

    setup(quiet)
    from compressor.stages.compare import compare, parse_item, resolve, write_outputs
    from compressor.stages.context import DataFiles
    from compressor.stages.render import text_table
    from exporters.runtime import artifact_task

    if plot is not None and data.eval is None:
        from compressor.errors import ConfigError

        raise ConfigError("--plot shows accuracy against latency: pass --data with labelled examples")
    entries = [resolve(path, name, baseline=True) for name, path in map(parse_item, baseline or [])]
    entries += [resolve(path, name) for name, path in map(parse_item, items)]
    task = artifact_task(entries[0].artifact) if entries else None  # a regression artifact reads labels as scores
    comparison = compare(entries, config, data=DataFiles(data).eval(task=task), latency_reference=latency_reference)
    write_outputs(comparison, json_path=json_path, markdown=markdown, plot=plot)
    typer.echo(text_table(*comparison.table()))
    for label, path in (("json", json_path), ("markdown", markdown), ("plot", plot)):
        if path is not None:
            typer.echo(f"{label}: {path}")
