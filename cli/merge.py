"""`compressor merge`: fold a fine-tuning run's adapter into the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._options import ForceOpt, JsonOpt, OutDirOpt, QuietOpt, config_options, run_stage_command
from compressor.stages.merge import MergeConfig


@config_options(config=MergeConfig)
def command(
    run_dir: Annotated[Path, typer.Argument(help="The --out directory of `compressor finetune`.")],
    out: OutDirOpt,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    *,
    config: MergeConfig,
) -> None:
    """Merge the adapter of RUN_DIR into the base weights: a plain checkpoint of stock modules, same logits.

    Example: compressor merge runs/lora --out runs/lora-merged
    """
    from cli._options import setup

    setup(quiet or as_json)
    run_stage_command(
        "merge",
        config,
        out=out,
        adapter=run_dir,
        inputs=[run_dir, config.base],
        force=force,
        quiet=quiet,
        as_json=as_json,
    )
