"""`compressor export`: a checkpoint → a checked ONNX artifact (fp32 parity, fusion by timing, gated int8)."""

from __future__ import annotations

from cli._options import Fields, ForceOpt, JsonOpt, ModelArg, OutDirOpt, QuietOpt, config_options, run_stage_command
from compressor.stages.context import DataSpec
from exporters.onnx.config import ExportConfig

DATA = Fields(
    DataSpec,
    include=("eval", "text_column", "text_pair_column", "label_column", "task"),
    help=(("eval", "Labelled data for the int8 gate and the accuracy in the manifest (a sample is used)."),),
)


@config_options(config=ExportConfig, data=DATA)
def command(
    model: ModelArg,
    out: OutDirOpt,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    *,
    config: ExportConfig,
    data: DataSpec,
) -> None:
    """Export MODEL to an ONNX artifact: fp32 parity check, fusion kept only if faster, int8 behind an accuracy gate.

    Example: compressor export minilm --out artifacts/minilm-int8 --eval-data samples/data/sst2/validation.tsv
    """
    from cli._options import setup

    setup(quiet or as_json)
    run_stage_command(
        "export",
        config,
        out=out,
        data=data,
        model=model,
        inputs=[model, data.eval, config.calibration_data],
        force=force,
        quiet=quiet,
        as_json=as_json,
    )
