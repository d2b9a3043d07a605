"""`compressor merge`: fold a fine-tuning run's adapter into the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._options import ForceOpt, JsonOpt, OutDirOpt, QuietOpt


def command(
    run_dir: Annotated[Path, typer.Argument(help="The --out directory of `compressor finetune`.")],
    out: OutDirOpt,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Merge the adapter of RUN_DIR into the base weights: a plain checkpoint of stock modules, same logits.

    Example: compressor merge runs/lora --out runs/lora-merged
    """
    from cli._options import emit, setup

    setup(quiet)
    from compressor.merge import merge_run

    report = merge_run(run_dir, out, force=force)
    data = {
        "out": str(report.out_dir),
        "method": report.method,
        "max_abs_logit_diff": report.max_abs_diff,
        "parameters": report.parameters,
    }
    if as_json:
        emit(data, True)
    elif not quiet:
        typer.echo(f"merged {report.method} adapter into {report.out_dir} (max |Δlogit| {report.max_abs_diff:.1e})")
