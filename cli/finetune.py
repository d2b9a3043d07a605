"""`compressor finetune`: train a checkpoint on labelled data with one fine-tuning method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from cli._options import DataOpt, ForceOpt, JsonOpt, LabelColOpt, ModelArg, OutDirOpt, PairColOpt, QuietOpt, TextColOpt


def _methods_help() -> list[tuple[str, str]]:
    """(method, its options with defaults) rows for --help, built from the registered configs."""
    import compressor.methods  # noqa: F401
    from compressor.methods.base import METHODS
    from compressor.schema import describe

    rows = []
    for name in METHODS.names():
        method = METHODS.get(name)
        fields = ", ".join(f"{n}={d!r}" for n, _h, d in describe(method.config_cls))
        rows.append((name, f"{fields or '(no options)'}; --lr default {method.default_lr:g}"))
    return rows


def command(
    model: ModelArg,
    data: DataOpt,
    out: OutDirOpt,
    method: Annotated[
        str, typer.Option("--method", "-m", help="full, lora, dsee, pafi, hiwi, adamix, pruning-adapter.")
    ] = "full",
    option: Annotated[
        list[str] | None, typer.Option("--option", "-O", help="Method option KEY=VALUE (repeatable), e.g. -O rank=16.")
    ] = None,
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Validation data (same columns).")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the training data.")] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after N optimizer steps (-1: epochs).")] = -1,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: the method's).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size per device.")] = 32,
    max_length: Annotated[int, typer.Option("--max-length", help="Truncate inputs to N tokens.")] = 128,
    max_train_samples: Annotated[
        int | None, typer.Option("--max-train-samples", help="Use a seeded sample of N training rows.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    bf16: Annotated[bool, typer.Option("--bf16", help="bfloat16 mixed precision.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="float16 mixed precision (CUDA).")] = False,
    save_steps: Annotated[int, typer.Option("--save-steps", help="Checkpoint every N steps (for --resume).")] = 200,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = False,
    text_column: TextColOpt = None,
    text_pair_column: PairColOpt = None,
    label_column: LabelColOpt = "label",
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune MODEL on --data with one method; saves only the adapter (safetensors) and its config.

    \b
    Example:
      compressor finetune minilm --data samples/data/sst2/train.tsv \\
        --eval-data samples/data/sst2/validation.tsv --method lora -O rank=8 \\
        --max-train-samples 2000 --out runs/lora
    """
    from cli._options import emit, setup

    setup(quiet)
    import compressor.methods  # noqa: F401
    from compressor.data import load_data
    from compressor.finetune import finetune
    from compressor.methods.base import METHODS
    from compressor.schema import build_config, parse_options
    from compressor.train.config import TrainConfig

    method_cfg = parse_options(METHODS.get(method).config_cls, option, source=f"--option (method {method})")
    train_cfg = build_config(
        TrainConfig,
        dict(
            epochs=epochs,
            max_steps=max_steps,
            lr=lr,
            batch_size=batch_size,
            max_length=max_length,
            seed=seed,
            device=device,
            bf16=bf16,
            fp16=fp16,
            save_steps=save_steps,
        ),
        source="finetune",
    )
    cols = dict(text_column=text_column, text_pair_column=text_pair_column, label_column=label_column)
    train = load_data(data, **cols).sample(max_train_samples, seed=seed)
    val = load_data(eval_data, id2label=train.id2label, **cols) if eval_data else None
    report = finetune(
        model,
        method,
        method_cfg,
        train_cfg,
        data=train,
        eval_data=val,
        out_dir=out,
        resume=resume,
        force=force,
        quiet=quiet,
    )
    summary = {
        "out": str(report.out_dir),
        "method": method,
        "trainable_parameters": report.trainable,
        "total_parameters": report.total,
        "trainable_percent": round(100 * report.trainable_fraction, 4),
        **report.metrics,
    }
    if as_json:
        emit(summary, True)
    elif not quiet:
        acc = report.metrics.get("eval_accuracy")
        typer.echo(
            f"{method}: trained {report.trainable:,} of {report.total:,} parameters "
            f"({100 * report.trainable_fraction:.3f}%)"
            + (f", validation accuracy {acc:.4f}" if acc is not None else "")
        )
        typer.echo(f"adapter saved to {report.out_dir}")


class command_cls(TyperCommand):  # noqa: N801 - registered by cli/main.py as this command's click class
    """Appends every registered method's options to `--help`, computed only when help is shown (keeps torch out
    of the import path of the other commands, e.g. `compressor predict`)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        with formatter.section("Methods and their -O options (defaults)"):
            formatter.write_dl(_methods_help())
