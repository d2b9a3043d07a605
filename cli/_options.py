"""Option aliases shared by the commands (Annotated types) and small output helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

ModelArg = Annotated[str, typer.Argument(help="A local checkpoint directory, or `minilm` for the bundled model.")]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (written atomically).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace --out if it exists and is not empty.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info messages.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda (cuda:N).")]
DataOpt = Annotated[
    Path, typer.Option("--data", "-d", help="Labelled data: csv, tsv, jsonl, parquet or a datasets dir.")
]
TextColOpt = Annotated[
    str | None, typer.Option("--text-column", help="Text column (default: text, sentence, sentence1, …).")
]
PairColOpt = Annotated[str | None, typer.Option("--text-pair-column", help="Second text column for pair tasks.")]
LabelColOpt = Annotated[str, typer.Option("--label-column", help="Label column (strings or integers).")]


def setup(quiet: bool) -> None:
    from cli.main import configure_logging

    configure_logging(quiet)


def emit(data: Any, as_json: bool) -> None:
    """Print data as JSON when asked (machine output), else nothing here (commands print their own tables)."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
