"""`compressor demo`: the bundled MiniLM on the bundled SST-2 data, the whole pipeline, in about 10 minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._options import ForceOpt, QuietOpt

RECIPE = Path(__file__).resolve().parents[1] / "samples" / "recipes" / "minilm-sst2-fast.yaml"


DemoOutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory (one sub-directory per stage).")]


def command(
    out: DemoOutOpt = Path("runs/demo"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted demo in --out.")] = False,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run samples/recipes/minilm-sst2-fast.yaml: fine-tune MiniLM on 2,000 SST-2 rows, prune half its heads and
    FFN neurons with distillation, export int8, and compare with dense fp32 and int8 exports on all 872
    validation rows (accuracy, p50 latency at batch 1, sequence 128, 2 threads, file size).

    Example: compressor demo --out runs/demo --force
    """
    from cli._options import setup

    setup(quiet)
    from compressor.errors import ConfigError
    from compressor.stages.report import final_table
    from compressor.stages.runner import run_pipeline

    if not RECIPE.is_file():
        raise ConfigError(f"the demo recipe `{RECIPE}` is missing; reinstall compressor from its source tree")
    result = run_pipeline(RECIPE, out, resume=resume, force=force, quiet=quiet)
    table = final_table(result.out_dir)
    if table:
        typer.echo(table)
    typer.echo(f"artifact: {result.artifact}")
    typer.echo(f"report: {result.report_html}")
