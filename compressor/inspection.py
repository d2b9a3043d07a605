"""What is in a directory: an artifact (manifest, ops, sizes, structure), a checkpoint, a fine-tuning output (what
it stores, as a share of the model), or a pipeline run.

Artifacts are inspected without torch (onnx reads the graph without its weights); checkpoints are loaded with
`load_model` to count parameters per layer.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from compressor.errors import ArtifactError, ConfigError
from compressor.stages.tables import structure_rows

REPORT_NAME = "report.md"
STORED_FILES = ("adapter.safetensors", "delta.safetensors")  # what `compressor finetune` keeps of a run


def detect(path: Path) -> str:
    """`artifact`, `checkpoint` or `run`; a ConfigError naming what was looked for otherwise."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"`{path}` not found; pass an artifact, a checkpoint or a run directory")
    if not path.is_dir():
        raise ConfigError(f"`{path}` is a file; pass an artifact, a checkpoint or a run directory")
    if (path / "compressor.json").is_file() or (path / "model.onnx").is_file():
        return "artifact"
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return "checkpoint"
    if (path / "method.json").is_file() and any((path / n).is_file() for n in STORED_FILES):
        return "finetune"
    if any((path / name).is_file() for name in (REPORT_NAME, "recipe.json", "run.json")):
        return "run"
    raise ConfigError(
        f"`{path}` is not an artifact (compressor.json + model.onnx), a checkpoint (config.json + model.safetensors), "
        f"a fine-tuning output (method.json + adapter.safetensors) or a run directory ({REPORT_NAME})"
    )


def inspect_path(path: Path) -> dict[str, Any]:
    """A JSON-ready description of `path`, with `kind` telling which of the three it is."""
    kind = detect(path)
    inspectors = {
        "artifact": inspect_artifact,
        "checkpoint": inspect_checkpoint,
        "finetune": inspect_finetune,
        "run": inspect_run,
    }
    return inspectors[kind](Path(path))


def inspect_artifact(path: Path) -> dict[str, Any]:
    """Manifest summary, integrity, file sizes, op counts, quantization/fusion/gate results, per-layer structure."""
    # `integrity` is "ok" only when `compressor predict` would load the artifact (every listed file present with its
    # hash, no path leaving the artifact, config and graph consistent); otherwise the error predict would print.
    from exporters.manifest import MODEL_NAME, artifact_file, is_file, read_manifest

    manifest = read_manifest(path)
    integrity = artifact_integrity(path)
    files = {p.name: p.stat().st_size for p in sorted(path.iterdir()) if is_file(p)}
    ops: dict[str, int] = {}
    try:
        model = artifact_file(path, MODEL_NAME)
    except ArtifactError:  # a graph outside the artifact is not read, not even to count ops (integrity says why)
        model = None
    if model is not None and is_file(model):
        try:
            ops = op_counts(model)
        except ArtifactError as err:  # a damaged graph is still worth describing: say so in `integrity`
            integrity = str(err) if integrity == "ok" else f"{integrity}; {err}"
    stages = manifest.get("stages")
    return {
        "kind": "artifact",
        "path": str(path),
        "integrity": integrity,
        "schema": manifest.get("schema"),
        "source": manifest.get("source"),
        "stages": [
            s.get("stage", s.get("kind", "?")) if isinstance(s, dict) else str(s)
            for s in (stages if isinstance(stages, list) else [])
        ],
        "opset": manifest.get("opset"),
        "max_length": manifest.get("max_length"),
        "toolchain": manifest.get("toolchain"),
        "params": manifest.get("params"),
        "files": files,
        "total_bytes": sum(files.values()),
        "ops": ops,
        "quantization": manifest.get("quantization"),
        "fusion": manifest.get("fusion"),
        "task": manifest.get("task"),
        "accuracy": manifest.get("accuracy"),
        "regression": manifest.get("regression"),
        "latency": manifest.get("latency"),
        "layers": _artifact_layers(manifest.get("structure")),
    }


def artifact_integrity(path: Path) -> str:
    """`ok` when the runtime loads the artifact (the checks of `predict`), else the one-line reason it refuses it."""
    import logging

    from exporters.runtime import Runtime

    runtime_log = logging.getLogger("exporters.runtime")
    level = runtime_log.level
    runtime_log.setLevel(logging.WARNING)  # its "loaded …" line is for predict, not for inspect's report
    try:
        Runtime(path, threads=1)
    except ArtifactError as err:
        return str(err)
    finally:
        runtime_log.setLevel(level)
    return "ok"


def _artifact_layers(structure: Any) -> list[dict[str, int]]:
    """`layer_rows` of the manifest's structure; [] when it is not what export writes."""
    # The manifest is not covered by its own hashes: any JSON can be there, and inspect must still describe it.
    try:
        return structure_rows(structure if isinstance(structure, dict) else None)
    except (AttributeError, TypeError, ValueError, OverflowError):
        return []


def op_counts(model_path: Path) -> dict[str, int]:
    """Node count per op type (with its domain when not the default one), largest first; empty on an edge install
    without the `onnx` package (the graph is described without its op counts)."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ModuleNotFoundError:
        return {}

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RecursionError) as err:
        raise ArtifactError(f"`{model_path}` is not an ONNX model ({str(err)[:200]}); re-export it") from None
    counts = Counter(
        f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node
    )
    return dict(counts.most_common())


def inspect_checkpoint(path: Path) -> dict[str, Any]:
    """Per-layer heads and FFN width (from `compressor_structure`) and parameter counts, total and per layer."""
    from compressor.arch.adapters import adapter_record
    from compressor.arch.parts import count_parameters, encoder_layers
    from compressor.arch.structure import is_pruned, structure_of
    from compressor.checkpoint import load_model, read_config

    raw = read_config(path)  # a ModelError naming the file when config.json is not valid JSON
    model, _ = load_model(path)
    structure = structure_of(model)
    layers = structure_rows(structure)
    for row, layer in zip(layers, encoder_layers(model), strict=True):
        row["params"] = sum(p.numel() for p in layer.parameters())
    weights = path / "model.safetensors"
    return {
        "kind": "checkpoint",
        "path": str(path),
        "model_type": raw.get("model_type"),
        "architectures": raw.get("architectures"),
        "labels": {str(k): v for k, v in (raw.get("id2label") or {}).items()},
        "pruned": is_pruned(structure),
        "vocab": structure.get("vocab"),
        "adapter": adapter_record(model),  # AdaMix's kept bottleneck adapters (None without)
        "params": {"total": count_parameters(model), "encoder": count_parameters(model, encoder_only=True)},
        "weights_bytes": weights.stat().st_size,
        "layers": layers,
    }


def inspect_finetune(path: Path) -> dict[str, Any]:
    """A `compressor finetune` output: the method, its base, and the bytes it stores as a share of the model.

    The model's bytes are the merged model's tensors when the run recorded them (a method that stores a delta),
    else its parameter count × 4 bytes (fp32).
    """
    from compressor.schema import load_json

    def obj(name: str) -> dict[str, Any]:
        data = load_json(path / name, what=name) if (path / name).is_file() else {}
        if not isinstance(data, dict):
            raise ConfigError(f"`{path / name}` is not a JSON object; rerun `compressor finetune`")
        return data

    method, base, metrics = obj("method.json"), obj("base.json"), obj("metrics.json")
    stored = next(path / n for n in STORED_FILES if (path / n).is_file())
    stored_bytes = stored.stat().st_size
    model_bytes = metrics.get("model_bytes")
    basis = "merged model tensors"
    if not isinstance(model_bytes, int) or model_bytes <= 0:
        total = metrics.get("total_parameters")
        model_bytes = 4 * total if isinstance(total, int) and total > 0 else None
        basis = "fp32: parameters × 4 bytes"
    files = {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}
    return {
        "kind": "finetune",
        "path": str(path),
        "method": method.get("kind"),
        "options": method.get("fields"),
        "base": base.get("model"),
        "accuracy": metrics.get("eval_accuracy"),
        "pearson": metrics.get("eval_pearson"),  # a regression's validation score
        "trainable": metrics.get("trainable_parameters"),
        "total": metrics.get("total_parameters"),
        "stored_file": stored.name,
        "stored_bytes": stored_bytes,
        "model_bytes": model_bytes,
        "stored_share": stored_bytes / model_bytes if model_bytes else None,
        "share_basis": basis,
        "files": files,
    }


def inspect_run(path: Path) -> dict[str, Any]:
    """A pipeline run directory (finished or interrupted): its stages, their status and the final table."""
    from compressor.stages.report import summarise_run

    stages = [p.name for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return {"kind": "run", "path": str(path), "stages": stages, "report": summarise_run(path)}
