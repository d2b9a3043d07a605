"""`compressor inspect`: what is in an artifact, a checkpoint or a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli._options import JsonOpt, QuietOpt


def command(
    path: Annotated[
        Path, typer.Argument(help="An artifact, a checkpoint, a fine-tuning output, or a pipeline run directory.")
    ],
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show PATH's structure: manifest, ops, sizes and quantization of an artifact; heads, FFN widths and parameters
    of a checkpoint; method and stored bytes of a fine-tuning output; the report of a run.

    Example: compressor inspect runs/artifact
    """
    from cli._options import emit, setup

    setup(quiet)
    from compressor.inspection import inspect_path

    info = inspect_path(path)
    if as_json:
        emit(info, True)
        return
    printers = {"artifact": _print_artifact, "checkpoint": _print_checkpoint, "finetune": _print_finetune}
    printers.get(info["kind"], _print_run)(info)


def _layers_table(title: str, layers: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    columns = ["layer", "source", "heads", "ffn"] + (["params"] if any("params" in r for r in layers) else [])
    for col in columns:
        table.add_column(col, justify="right")
    for r in layers:
        row = [str(r["layer"]), str(r["source"]), str(r["heads"]), str(r["intermediate"])]
        if "params" in r:
            row.append(f"{r['params']:,}")
        table.add_row(*row)
    return table


def _kv(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_kv(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_kv(v) for v in value) or "-"
    return "-" if value is None else str(value)


def _print_artifact(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(soft_wrap=True)
    console.print(f"[bold]artifact[/bold] {escape(str(info['path']))}")
    integrity = escape(info["integrity"])  # a file name or message may hold `[...]`, which rich would read as markup
    console.print(
        f"integrity: {'[green]ok[/green]' if integrity == 'ok' else '[red]' + integrity + '[/red]'}", highlight=False
    )
    keys = ("source", "stages", "opset", "max_length", "params", "quantization", "fusion", "accuracy", "latency")
    for key in keys:
        if key == "accuracy" and info.get("regression"):  # a regression artifact: pearson, spearman, mse instead
            key = "regression"
        console.print(f"{key}: {_kv(info.get(key))}", highlight=False, markup=False)
    files = Table(title=f"files ({info['total_bytes'] / 1e6:.2f} MB)", title_justify="left")
    files.add_column("file")
    files.add_column("bytes", justify="right")
    for name, size in info["files"].items():
        files.add_row(escape(name), f"{size:,}")
    console.print(files)
    if info["ops"]:
        ops = Table(title=f"ops ({sum(info['ops'].values())} nodes)", title_justify="left")
        ops.add_column("op")
        ops.add_column("count", justify="right")
        for op, n in info["ops"].items():
            ops.add_row(escape(op), str(n))
        console.print(ops)
    else:
        console.print("ops: not counted (needs the onnx package: pip install 'compressor[train]')")
    if info["layers"]:
        console.print(_layers_table("structure", info["layers"]))
    else:
        console.print("structure: not recorded (unpruned)")


def _print_checkpoint(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(soft_wrap=True)
    state = "pruned" if info["pruned"] else "unpruned"
    console.print(f"[bold]checkpoint[/bold] {escape(str(info['path']))} ({escape(str(info['model_type']))}, {state})")
    console.print(f"labels: {_kv(info['labels'])}", markup=False)
    console.print(
        f"parameters: {info['params']['total']:,} total, {info['params']['encoder']:,} in the encoder; "
        f"weights {info['weights_bytes'] / 1e6:.2f} MB"
    )
    if info.get("vocab"):
        console.print(f"vocabulary: {_kv(info['vocab'])}", markup=False)
    if info.get("adapter"):
        adapter = info["adapter"]
        console.print(
            f"kept adapters: bottleneck {adapter['bottleneck']}, {adapter['activation']}, after the FFN output of "
            f"layers {', '.join(map(str, adapter['layers']))}",
            markup=False,
        )
    console.print(_layers_table("layers", info["layers"]))


def _print_finetune(info: dict[str, Any]) -> None:
    lines = [f"fine-tuning output {info['path']}: method {info['method']} on {info['base']}"]
    if info.get("options"):
        lines.append(f"options: {_kv(info['options'])}")
    if info.get("accuracy") is not None:
        lines.append(f"validation accuracy: {100 * info['accuracy']:.2f} %")
    elif info.get("pearson") is not None:
        lines.append(f"validation pearson: {info['pearson']:.4f}")
    if info.get("trainable") and info.get("total"):
        share = 100 * info["trainable"] / info["total"]
        lines.append(f"trained: {info['trainable']:,} of {info['total']:,} parameters ({share:.3f} %)")
    stored = f"stored: {info['stored_file']}, {info['stored_bytes']:,} bytes"
    if info.get("stored_share") is not None:
        stored += (
            f" = {100 * info['stored_share']:.3f} % of the model's {info['model_bytes']:,} ({info['share_basis']})"
        )
    lines.append(stored)
    for line in lines:
        typer.echo(line)


def _print_run(info: dict[str, Any]) -> None:
    typer.echo(f"run {info['path']}: stages {', '.join(info['stages']) or '-'}")
    typer.echo(info["report"].rstrip())
