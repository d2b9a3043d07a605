"""The baseline users have today: optimum's ONNX export of a fine-tuned checkpoint (fp32) and optimum's dynamic
int8 of it, each saved with a `compressor.json` manifest so our benchmark loads and verifies it like every row."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def optimum_preset() -> str:
    """optimum's AutoQuantizationConfig preset for this CPU (what a user following optimum's docs would pick)."""
    import platform

    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("flags", "features")):
                flags = set(line.partition(":")[2].split())
                break
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def export_optimum_fp32(checkpoint: Path, out_dir: Path, *, max_length: int) -> dict[str, Any]:
    """`ORTModelForSequenceClassification.from_pretrained(checkpoint, export=True)`, saved with the tokenizer and
    a `compressor.json` manifest (so our benchmark verifies and loads it like every other row)."""
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    from compressor.fs import atomic_dir
    from exporters.manifest import write_manifest

    with atomic_dir(out_dir) as tmp:
        model = ORTModelForSequenceClassification.from_pretrained(str(checkpoint), export=True, local_files_only=True)
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True).save_pretrained(tmp)
        write_manifest(tmp, _optimum_manifest(checkpoint, {"mode": "none"}, max_length))
    return {"model_bytes": (out_dir / "model.onnx").stat().st_size}


def quantize_optimum(fp32_dir: Path, out_dir: Path, preset: str) -> dict[str, Any]:
    """optimum's dynamic int8 (`ORTQuantizer` + `AutoQuantizationConfig.<preset>(is_static=False,
    per_channel=False)`); the quantized graph is stored as `model.onnx`."""
    import shutil

    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from compressor.fs import atomic_dir
    from exporters.manifest import MANIFEST_NAME, read_manifest, write_manifest

    qconfig = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=False)
    source = read_manifest(fp32_dir)["source"]["checkpoint"]
    with atomic_dir(out_dir) as tmp:
        ORTQuantizer.from_pretrained(str(fp32_dir), file_name="model.onnx").quantize(
            save_dir=tmp, quantization_config=qconfig
        )
        (tmp / "model_quantized.onnx").rename(tmp / "model.onnx")
        for f in fp32_dir.iterdir():  # tokenizer files (the quantizer writes the graph and configs only)
            if f.is_file() and f.name not in ("model.onnx", MANIFEST_NAME) and not (tmp / f.name).exists():
                shutil.copy2(f, tmp / f.name)
        record = {
            "mode": "dynamic",
            "tool": "optimum",
            "preset": preset,
            "per_channel": False,
            "description": str(qconfig),
        }
        write_manifest(tmp, _optimum_manifest(Path(source), record, int(read_manifest(fp32_dir)["max_length"])))
    return {"model_bytes": (out_dir / "model.onnx").stat().st_size, "preset": preset}


def _optimum_manifest(checkpoint: Path, quantization: dict[str, Any], max_length: int) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for package in ("optimum", "optimum-onnx", "onnxruntime", "onnx", "torch", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "toolchain": versions,
        "source": {"checkpoint": str(checkpoint)},
        "stages": [{"stage": "optimum-export"}]
        + ([{"stage": "optimum-quantize", "config": quantization}] if quantization["mode"] != "none" else []),
        "structure": None,
        "params": None,
        "quantization": quantization,
        "fusion": None,
        "accuracy": None,
        "latency": None,
        "max_length": max_length,
    }
