"""`compressor finetune`: train a checkpoint on labelled data with one fine-tuning method; save the adapter."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from cli._options import Fields, ForceOpt, JsonOpt, ModelArg, OutDirOpt, QuietOpt, config_options, run_stage_command
from compressor.stages.context import DataSpec
from compressor.train.config import TrainConfig

DATA = Fields(
    DataSpec,
    include=("train", "eval", "text_column", "text_pair_column", "label_column", "task", "max_train_samples", "seed"),
    required=("train",),
)


@config_options(train=TrainConfig, data=DATA)
def command(
    model: ModelArg,
    out: OutDirOpt,
    method: Annotated[str, typer.Option("--method", "-m", help="A fine-tuning method (listed below).")] = "full",
    option: Annotated[
        list[str] | None, typer.Option("--option", "-O", help="Method option KEY=VALUE (repeatable), e.g. -O rank=16.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = False,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    *,
    train: TrainConfig,
    data: DataSpec,
) -> None:
    """Fine-tune MODEL on --data with one method; saves only the adapter (safetensors) and its config.

    \b
    Example:
      compressor finetune minilm --data samples/data/sst2/train.tsv \\
        --eval-data samples/data/sst2/validation.tsv --method lora -O rank=8 \\
        --max-train-samples 2000 --out runs/lora
    """
    from cli._options import setup

    setup(quiet or as_json)
    from compressor.methods.base import METHODS
    from compressor.schema import parse_options
    from compressor.stages.finetune import FinetuneConfig

    options = parse_options(METHODS.get(method).config_cls, option, source=f"--option (method {method})")
    config = FinetuneConfig(method=method, options=options, train=train)
    run_stage_command(
        "finetune",
        config,
        out=out,
        data=data,
        model=model,
        inputs=[model, data.train, data.eval],
        resume=resume,
        force=force,
        quiet=quiet,
        as_json=as_json,
    )


def _methods_help() -> list[tuple[str, str]]:
    """(method, its options with defaults) rows for --help, built from the registered configs."""
    from compressor.methods.base import METHODS
    from compressor.schema import describe

    rows = []
    for name in METHODS.names():
        method = METHODS.get(name)
        fields = ", ".join(f"{n}={d!r}" for n, _h, d in describe(method.config_cls))
        rows.append((name, f"{fields or '(no options)'}; --lr default {method.default_lr:g}"))
    return rows


class command_cls(TyperCommand):  # noqa: N801 - registered by cli/main.py as this command's click class
    """Appends every registered method's options to `--help`, computed only when help is shown (keeps torch out
    of the import path of the other commands, e.g. `compressor predict`)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        with formatter.section("Methods and their -O options (defaults)"):
            formatter.write_dl(_methods_help())
