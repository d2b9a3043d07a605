"""`compressor analyse`: importance of every head, FFN neuron and tensor, and a pruning plan under a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._options import (
    ForceOpt,
    JsonOpt,
    LabelColOpt,
    ModelArg,
    OutDirOpt,
    PairColOpt,
    QuietOpt,
    TextColOpt,
    emit,
    setup,
)

# Defaults live in AnalyseConfig; options left unset here take them (so the two cannot drift apart).
ScorerOpt = Annotated[
    str | None,
    typer.Option(
        "--scorer",
        help="head-gradient (default; Michel et al. 2019), taylor (|θ·∂L/∂θ|), tensor-loss (our proxy of "
        "Sensi-BERT's per-tensor ranking: the paper's formula is not public), fisher (Kwon et al. 2022), magnitude "
        "(data-free).",
    ),
]
BudgetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--budget",
        metavar="KEY=VALUE",
        help="Exactly one of params=F (fraction of encoder parameters kept), flops=F (fraction of FLOPs at "
        "--seq-len), latency-ms=T (p50 target on this CPU at --threads), or `none` for no plan. Default params=0.6.",
    ),
]
DataOptional = Annotated[
    Path | None,
    typer.Option(
        "--data", "-d", help="Labelled data: csv, tsv, jsonl, parquet or a datasets dir (not needed by magnitude)."
    ),
]


def command(
    model: ModelArg,
    out: OutDirOpt,
    data: DataOptional = None,
    scorer: ScorerOpt = None,
    budget: BudgetOpt = None,
    samples: Annotated[int | None, typer.Option("--samples", help="Examples used for scoring (default 512).")] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(
            "--seq-len",
            help="Max tokens per example; also the sequence length of FLOPs/latency budgets (default 128).",
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Scoring batch size (default 16).")] = None,
    min_heads: Annotated[
        int | None,
        typer.Option(
            "--min-heads", help="Heads each kept layer keeps at least; 0 lets a layer lose all heads (default 1)."
        ),
    ] = None,
    min_neurons: Annotated[
        int | None,
        typer.Option("--min-neurons", help="FFN neurons each kept layer keeps at least; 0 allowed (default 1)."),
    ] = None,
    allow_layer_drop: Annotated[
        bool,
        typer.Option(
            "--allow-layer-drop",
            help="Drop whole layers with the lowest score per cost when that keeps more importance.",
        ),
    ] = False,
    density: Annotated[
        float | None,
        typer.Option(
            "--density",
            help="tensor-loss: fraction of each tensor kept when it is magnitude-pruned alone (default 0.5).",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="CPU threads of the latency cost table (latency-ms budget; default 2)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for drawing the scoring sample (default 0).")
    ] = None,
    text_column: TextColOpt = None,
    text_pair_column: PairColOpt = None,
    label_column: LabelColOpt = "label",
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Score heads, FFN neurons and tensors on your data and write sensitivity.json, heatmap.png and plan.json.

    Example: compressor analyse minilm --data samples/data/sst2/validation.tsv --out runs/analyse --budget params=0.6
    """
    setup(quiet)
    from compressor.fs import check_out_dir
    from compressor.schema import build_config
    from compressor.sensitivity.config import AnalyseConfig

    values = {
        "scorer": scorer,
        "samples": samples,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "min_heads": min_heads,
        "min_neurons": min_neurons,
        "density": density,
        "threads": threads,
        "seed": seed,
        "budget": ",".join(budget) if budget else None,
        "allow_layer_drop": allow_layer_drop or None,
    }
    config = build_config(AnalyseConfig, {k: v for k, v in values.items() if v is not None}, source="analyse")
    check_out_dir(out, force=force)

    from compressor.checkpoint import load_model
    from compressor.sensitivity.analyse import analyse
    from compressor.sensitivity.scorers import SCORERS

    loaded, tokenizer = load_model(model)
    labelled = None
    if data is not None:
        labelled = _load_data(loaded, data, text_column, text_pair_column, label_column)
    elif SCORERS.get(config.scorer).needs_data:
        from compressor.errors import ConfigError

        raise ConfigError(f"scorer `{config.scorer}` needs labelled data; pass --data (or use --scorer magnitude)")
    report = analyse(loaded, tokenizer, config, data=labelled, out_dir=out)

    if as_json:
        emit(report.summary(), True)
        return
    from rich.console import Console

    Console().print(report.table())
    for key, path in report.paths.items():
        typer.echo(f"{key}: {path}")


def _load_data(model: object, path: Path, text_column: str | None, pair_column: str | None, label_column: str):
    """Labelled data with the checkpoint's label ids when its label names match, else as they come."""
    from compressor.data import check_matches_model, load_data

    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    data = load_data(path, text_column=text_column, text_pair_column=pair_column, label_column=label_column)
    if set(data.id2label.values()) <= set(id2label.values()) and data.id2label != id2label:
        data = load_data(
            path, text_column=text_column, text_pair_column=pair_column, label_column=label_column, id2label=id2label
        )
    elif not set(data.id2label.values()) <= set(id2label.values()):
        check_matches_model(data, int(model.config.num_labels), str(getattr(model.config, "_name_or_path", "model")))
    return data
