"""`compressor prune`: remove attention heads and FFN neurons physically, then optionally recover."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._options import ForceOpt, JsonOpt, LabelColOpt, ModelArg, OutDirOpt, PairColOpt, QuietOpt, TextColOpt


def command(
    model: ModelArg,
    out: OutDirOpt,
    heads: Annotated[float, typer.Option(help="Fraction of heads to remove per layer (by weight magnitude).")] = 0.0,
    ffn: Annotated[float, typer.Option(help="Fraction of FFN neurons to remove per layer (by magnitude).")] = 0.0,
    plan: Annotated[Path | None, typer.Option(help="plan.json from `compressor analyse` (applied exactly).")] = None,
    recover: Annotated[str, typer.Option(help="none, distill, reconstruct or reconstruct+distill.")] = "none",
    recover_steps: Annotated[int, typer.Option("--recover-steps", help="Distillation steps (in total).")] = 0,
    distill_weight: Annotated[float, typer.Option("--distill-weight", help="λ in CE + λ·KL.")] = 1.0,
    temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 2.0,
    lr: Annotated[float | None, typer.Option(help="Recovery learning rate (default: the method's).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Recovery batch size.")] = 32,
    recover_method: Annotated[str, typer.Option("--recover-method", help="What trains while distilling.")] = "full",
    samples: Annotated[int, typer.Option(help="Sentences `--recover reconstruct` fits on.")] = 1024,
    iterations: Annotated[int, typer.Option(help="Reach the target in this many prune → recover rounds.")] = 1,
    schedule: Annotated[str, typer.Option(help="Kept share over the rounds: geometric or linear.")] = "geometric",
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Training data for recovery.")] = None,
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Validation data to report accuracy.")] = None,
    vocab: Annotated[Path | None, typer.Option("--vocab", help="Keep only the token ids this data uses.")] = None,
    vocab_fallback: Annotated[
        str, typer.Option("--vocab-fallback", help="Dropped token ids → unk (the [UNK] row) or nearest kept row.")
    ] = "unk",
    text_column: TextColOpt = None,
    text_pair_column: PairColOpt = None,
    label_column: LabelColOpt = "label",
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Prune MODEL's heads and FFN neurons (non-uniform widths allowed) and save a smaller checkpoint.

    Example: compressor prune runs/full --heads 0.3 --recover reconstruct -d samples/data/sst2/train.tsv -o runs/pruned
    """
    from cli._options import emit, setup

    setup(quiet)
    from compressor.prune.config import PruneConfig
    from compressor.prune.io import prune_checkpoint
    from compressor.schema import build_config

    cfg = build_config(
        PruneConfig,
        dict(
            heads=heads,
            ffn=ffn,
            plan=str(plan) if plan else None,
            recover=recover,
            recover_steps=recover_steps,
            distill_weight=distill_weight,
            temperature=temperature,
            lr=lr,
            batch_size=batch_size,
            recover_method=recover_method,
            samples=samples,
            iterations=iterations,
            schedule=schedule,
            vocab_fallback=vocab_fallback,
        ),
        source="prune",
    )
    cols = dict(text_column=text_column, text_pair_column=text_pair_column, label_column=label_column)
    report = prune_checkpoint(
        model, out, cfg, data=data, eval_data=eval_data, vocab=vocab, columns=cols, force=force, quiet=quiet
    )
    if as_json:
        emit(report, True)
    elif not quiet:
        typer.echo("layer  heads  ffn")
        for src, h, f in report["structure"]:
            typer.echo(f"{src:>5}  {h:>5}  {f:>5}")
        typer.echo(
            f"encoder parameters {report['encoder_params_before']:,} → {report['encoder_params_after']:,}; "
            f"saved to {out}"
        )
        if report.get("vocab"):
            v = report["vocab"]
            line = (
                f"vocabulary {v['kept']:,} of {v['source_size']:,} ids; weights "
                f"{v['model_bytes_before'] / 1e6:.1f} MB → {v['model_bytes_after'] / 1e6:.1f} MB"
            )
            if v.get("validation_unknown_rate") is not None:
                line += f"; validation tokens mapped to unknown {100 * v['validation_unknown_rate']:.2f}%"
            typer.echo(line)
        if report.get("eval_accuracy") is not None:
            typer.echo(f"validation accuracy {report['eval_accuracy']:.4f}")
