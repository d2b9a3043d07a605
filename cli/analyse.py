"""`compressor analyse`: importance of every head, FFN neuron and tensor, and a pruning plan under a budget."""

from __future__ import annotations

from cli._options import Fields, ForceOpt, JsonOpt, ModelArg, OutDirOpt, QuietOpt, config_options, run_stage_command
from compressor.sensitivity.config import AnalyseConfig
from compressor.stages.context import DataSpec

DATA = Fields(
    DataSpec,
    include=("train", "text_column", "text_pair_column", "label_column", "task"),
    help=(
        ("train", "Labelled data to score on (csv, tsv, jsonl, parquet or a datasets dir; not needed by magnitude)."),
    ),
)


@config_options(config=AnalyseConfig, data=DATA)
def command(
    model: ModelArg,
    out: OutDirOpt,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    *,
    config: AnalyseConfig,
    data: DataSpec,
) -> None:
    """Score heads, FFN neurons and tensors on your data and write sensitivity.json, heatmap.png and plan.json.

    Example: compressor analyse minilm --data samples/data/sst2/validation.tsv --out runs/analyse --budget params=0.6
    """
    from cli._options import setup

    setup(quiet or as_json)
    summary = run_stage_command(
        "analyse",
        config,
        out=out,
        data=data,
        model=model,
        inputs=[model, data.train],
        force=force,
        quiet=True,
        as_json=as_json,
    )
    if as_json:
        return
    from rich.console import Console
    from rich.table import Table

    table = summary["table"]
    view = Table(title=table["title"], title_justify="left", caption=table["caption"] or None)
    for i, header in enumerate(table["headers"]):
        view.add_column(header, justify="left" if i == 2 else "right")
    for row in table["rows"]:
        view.add_row(*row)
    Console().print(view)
    for key, path in summary["paths"].items():
        print(f"{key}: {path}")
