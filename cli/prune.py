"""`compressor prune`: remove attention heads and FFN neurons physically, then optionally recover."""

from __future__ import annotations

from cli._options import Fields, ForceOpt, JsonOpt, ModelArg, OutDirOpt, QuietOpt, config_options, run_stage_command
from compressor.prune.config import PruneConfig
from compressor.stages.context import DataSpec

DATA = Fields(
    DataSpec,
    include=("train", "eval", "text_column", "text_pair_column", "label_column", "task"),
    help=(
        ("train", "Training data: recovery, re-scoring between rounds, and `--vocab train`."),
        ("eval", "Validation data: accuracy after pruning."),
    ),
)


@config_options(config=PruneConfig, data=DATA)
def command(
    model: ModelArg,
    out: OutDirOpt,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    *,
    config: PruneConfig,
    data: DataSpec,
) -> None:
    """Prune MODEL's heads and FFN neurons (non-uniform widths allowed) and save a smaller checkpoint.

    Example: compressor prune runs/full --heads 0.3 --recover reconstruct -d samples/data/sst2/train.tsv -o runs/pruned
    """
    from cli._options import setup

    setup(quiet or as_json)
    run_stage_command(
        "prune",
        config,
        out=out,
        data=data,
        model=model,
        inputs=[model, data.train, data.eval, config.plan, config.vocab if config.vocab != "train" else None],
        force=force,
        quiet=quiet,
        as_json=as_json,
    )
