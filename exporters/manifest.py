"""The artifact manifest, `compressor.json`: read, write and verify. Pure Python (no torch, no transformers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compressor.errors import ArtifactError
from compressor.fs import file_sha256 as sha256

MANIFEST_NAME = "compressor.json"
MODEL_NAME = "model.onnx"
SCHEMA = 1


def file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256(path)}


def write_manifest(artifact_dir: Path, manifest: dict[str, Any]) -> None:
    """Write `compressor.json`, filling `schema`, `kind` and the size/hash of every file in the directory."""
    manifest = dict(manifest)
    manifest["schema"] = SCHEMA
    manifest["kind"] = "compressor-artifact"
    manifest["files"] = {
        p.name: file_entry(p) for p in sorted(artifact_dir.iterdir()) if p.is_file() and p.name != MANIFEST_NAME
    }
    (artifact_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")


def read_manifest(artifact_dir: Path) -> dict[str, Any]:
    """Load and sanity-check `compressor.json` (present, JSON, our schema)."""
    artifact_dir = Path(artifact_dir)
    if not artifact_dir.is_dir():
        raise ArtifactError(f"artifact `{artifact_dir}` not found; pass a directory written by `compressor export`")
    path = artifact_dir / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(
            f"artifact `{artifact_dir}` has no {MANIFEST_NAME}; it was not written by `compressor export` "
            "or is incomplete; re-export it"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(f"`{path}` is not valid JSON; the artifact is damaged; re-export it") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "compressor-artifact":
        raise ArtifactError(f"`{path}` is not a compressor manifest; re-export the artifact")
    if not isinstance(manifest.get("schema"), int) or manifest["schema"] > SCHEMA:
        raise ArtifactError(f"`{path}` has schema {manifest.get('schema')!r}, newer than this compressor; upgrade it")
    return manifest


def verify_artifact(artifact_dir: Path) -> dict[str, Any]:
    """Check that model.onnx exists and matches the manifest's hash (external data is checked by the runtime)."""
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    model = artifact_dir / MODEL_NAME
    if not model.is_file():
        raise ArtifactError(f"artifact `{artifact_dir}` has no {MODEL_NAME}; re-export it")
    expected = (manifest.get("files") or {}).get(MODEL_NAME, {}).get("sha256")
    if expected is None:
        raise ArtifactError(
            f"`{artifact_dir / MANIFEST_NAME}` records no hash for {MODEL_NAME}; re-export the artifact"
        )
    if sha256(model) != expected:
        raise ArtifactError(
            f"`{model}` does not match the hash in {MANIFEST_NAME}: it was modified or corrupted; re-export it"
        )
    return manifest
