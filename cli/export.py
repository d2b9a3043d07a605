"""`compressor export`: a checkpoint → a checked ONNX artifact (fp32 parity, fusion by timing, gated int8)."""

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
    QuietOpt,
    TextColOpt,
    emit,
    setup,
)

QuantizeOpt = Annotated[str, typer.Option("--quantize", help="int8 mode: dynamic, static (calibrated QDQ) or none.")]
FuseOpt = Annotated[
    str,
    typer.Option(
        "--fuse", help="ORT fusion: auto (fused kept only if ≥ 3 % faster at 1 thread and at --threads), on, off."
    ),
]
PerChannelOpt = Annotated[
    bool | None,
    typer.Option(
        "--per-channel/--per-tensor",
        help="Weight scales per output channel or per tensor (default: per tensor, per channel if the gate needs it).",
    ),
]
ReduceRangeOpt = Annotated[
    bool | None,
    typer.Option(
        "--reduce-range/--no-reduce-range", help="7-bit weights; default: from --optimize-for, else this CPU."
    ),
]
EvalDataOpt = Annotated[
    Path | None, typer.Option("--eval-data", help="Labelled data for the int8 gate and accuracy (a sample is used).")
]
CalibrationOpt = Annotated[
    Path | None, typer.Option("--calibration-data", help="Text for static int8 calibration (labels not needed).")
]
GateOpt = Annotated[float, typer.Option("--gate", help="Minimum int8-vs-fp32 prediction agreement.")]
OptimizeForOpt = Annotated[
    str | None, typer.Option("--optimize-for", help="CPU target recorded in the artifact: avx512-vnni, avx2, arm64.")
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Fail when the fused graph lacks expected fused ops.")]
EvalSamplesOpt = Annotated[int, typer.Option("--eval-samples", help="Rows of --eval-data used by the gate.")]
EvalBatchOpt = Annotated[
    int, typer.Option("--eval-batch", help="Sentences per gate run (1 = the edge setting; int8 depends on padding).")
]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", help="Tokenizer truncation length stored in the artifact.")]
ThreadsOpt = Annotated[
    int, typer.Option("--threads", help="Threads for timing the candidate graphs (1 thread is timed as well).")
]
SeqLenOpt = Annotated[int, typer.Option("--seq-len", help="Sequence length for timing the candidate graphs.")]
BatchOpt = Annotated[int, typer.Option("--batch", help="Batch size for timing the candidate graphs.")]


def command(
    model: ModelArg,
    out: OutDirOpt,
    quantize: QuantizeOpt = "dynamic",
    fuse: FuseOpt = "auto",
    per_channel: PerChannelOpt = None,
    reduce_range: ReduceRangeOpt = None,
    eval_data: EvalDataOpt = None,
    calibration_data: CalibrationOpt = None,
    text_column: TextColOpt = None,
    label_column: LabelColOpt = "label",
    gate: GateOpt = 0.99,
    eval_samples: EvalSamplesOpt = 500,
    eval_batch: EvalBatchOpt = 1,
    optimize_for: OptimizeForOpt = None,
    strict: StrictOpt = False,
    max_length: MaxLengthOpt = 128,
    threads: ThreadsOpt = 2,
    seq_len: SeqLenOpt = 128,
    batch: BatchOpt = 1,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export MODEL to an ONNX artifact: fp32 parity check, fusion kept only if faster, int8 behind an accuracy gate.

    Example: compressor export minilm --out artifacts/minilm-int8 --eval-data samples/data/sst2/validation.tsv
    """
    setup(quiet or as_json)
    from compressor.checkpoint import load_model, model_fingerprint, resolve_model_path
    from compressor.data import load_data
    from compressor.fs import check_out_dir
    from exporters.onnx.config import ExportConfig
    from exporters.onnx.export import export_onnx

    config = ExportConfig(
        quantize=quantize,
        fuse=fuse,
        per_channel=per_channel,
        reduce_range=reduce_range,
        gate=gate,
        eval_samples=eval_samples,
        eval_batch=eval_batch,
        optimize_for=optimize_for,
        strict=strict,
        max_length=max_length,
        threads=threads,
        seq_len=seq_len,
        batch=batch,
    )
    check_out_dir(out, force=force)
    path = resolve_model_path(model)
    net, tokenizer = load_model(model)
    labelled = None
    if eval_data is not None:
        labelled = load_data(eval_data, text_column=text_column, label_column=label_column)
    calibration = None
    if calibration_data is not None:
        calibration = load_data(calibration_data, text_column=text_column, require_labels=False).texts
    source = {"model": model, "path": str(path), "weights_sha256_16": model_fingerprint(path)}
    report = export_onnx(
        net, tokenizer, config, out_dir=out, eval_data=labelled, calibration_texts=calibration, source=source
    )
    summary = {
        "out": str(report.out_dir),
        "model_bytes": report.model_bytes,
        "quantize": report.quantize,
        "fusion": report.fusion_choice,
        "timings_ms": report.timings_ms,
        "parity_max_abs_diff": report.parity_max_abs_diff,
        "agreement": report.agreement,
        "excluded_nodes": report.excluded_nodes,
        "accuracy": report.accuracy,
    }
    if as_json:
        emit(summary, True)
        return
    if not quiet:
        gate_text = "" if report.agreement is None else f", int8 agrees with fp32 on {100 * report.agreement:.1f}%"
        excluded = f", {len(report.excluded_nodes)} nodes kept fp32" if report.excluded_nodes else ""
        timings = ", ".join(f"{k} {v:.2f} ms" for k, v in report.timings_ms.items())
        typer.echo(
            f"wrote {report.out_dir} ({report.model_bytes / 1e6:.1f} MB, {report.quantize}, {report.fusion_choice} "
            f"graph; {timings}; parity {report.parity_max_abs_diff:.1g}{gate_text}{excluded})"
        )
