"""The artifact manifest, `compressor.json`: read, write and verify. Pure Python (no torch, no transformers).

An artifact is untrusted input: the manifest is parsed defensively (every field the runtime relies on has its type
checked), every file it lists is checked (presence, size, sha256) before anything is loaded, and no file is read
through a path that resolves outside the artifact directory (a symlink to `/etc/passwd` is refused, not read).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from compressor.errors import ArtifactError
from compressor.fs import file_sha256 as sha256

MANIFEST_NAME = "compressor.json"
MODEL_NAME = "model.onnx"
# Files `exporters/runtime.py` reads besides the graph and its external data: each must be listed when present.
RUNTIME_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
SCHEMA = 1

_SHA256 = re.compile(r"[0-9a-f]{64}")


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest's record of one file: its size and sha256."""
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


def artifact_file(artifact_dir: Path, name: str) -> Path:
    """`artifact_dir / name`, refused (ArtifactError) when it resolves (through symlinks) outside the directory."""
    # The path may not exist: callers check presence themselves, with a message that fits the file.
    artifact_dir = Path(artifact_dir)
    path = artifact_dir / name
    base, target = _resolve(artifact_dir), _resolve(path)
    if not target.is_relative_to(base):
        raise ArtifactError(
            f"`{path}` resolves to `{target}`, outside the artifact directory; refusing to read it; replace the "
            "link with the file itself or re-export the artifact"
        )
    return path


def read_manifest(artifact_dir: Path) -> dict[str, Any]:
    """Load and sanity-check `compressor.json`: present, JSON, our kind and schema, well-typed runtime fields."""
    artifact_dir = Path(artifact_dir)
    if not artifact_dir.is_dir():
        raise ArtifactError(f"artifact `{artifact_dir}` not found; pass a directory written by `compressor export`")
    path = artifact_file(artifact_dir, MANIFEST_NAME)
    if not is_file(path):
        raise ArtifactError(
            f"artifact `{artifact_dir}` has no {MANIFEST_NAME}; it was not written by `compressor export` "
            "or is incomplete; re-export it"
        )
    manifest = read_json_object(path)
    if manifest.get("kind") != "compressor-artifact":
        raise ArtifactError(f"`{path}` is not a compressor manifest; re-export the artifact")
    schema = manifest.get("schema")
    if not _is_int(schema) or schema < 1:
        raise ArtifactError(f"`{path}` has schema {short_repr(schema)}, not a schema number; re-export the artifact")
    if schema > SCHEMA:
        raise ArtifactError(f"`{path}` has schema {schema}, newer than this compressor; upgrade it")
    max_length = manifest.get("max_length")
    if max_length is not None and not (_is_int(max_length) and max_length >= 2):
        raise ArtifactError(
            f"`{path}` records max_length {short_repr(max_length)}, not an integer of at least 2; "
            "re-export the artifact"
        )
    inputs = manifest.get("inputs")
    if inputs is not None and not (isinstance(inputs, list) and all(isinstance(n, str) for n in inputs)):
        raise ArtifactError(
            f"`{path}` records inputs {short_repr(inputs)}, not a list of input names; re-export the artifact"
        )
    listed_files(manifest, path)  # a malformed `files` table is refused here, whoever reads the manifest
    return manifest


def listed_files(manifest: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """The manifest's `files` table, checked: safe relative names, each with a sha256 and (optionally) a size.

    Args:
        path: the manifest's path, for messages.
    """
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"`{path}` has no `files` table of hashes; re-export the artifact")
    for name, entry in files.items():
        if not _safe_name(name):
            raise ArtifactError(
                f"`{path}` lists {short_repr(name)}, not the name of a file inside the artifact; "
                "re-export the artifact"
            )
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise ArtifactError(f"`{path}` records no sha256 for {short_repr(name)}; re-export the artifact")
        if not _SHA256.fullmatch(entry["sha256"]):
            raise ArtifactError(
                f"`{path}` records {short_repr(entry['sha256'])} as the sha256 of {short_repr(name)}, not a sha256; "
                "re-export the artifact"
            )
        size = entry.get("bytes")
        if size is not None and not (_is_int(size) and size >= 0):
            raise ArtifactError(
                f"`{path}` records {short_repr(size)} as the size of {short_repr(name)}, not a byte count; "
                "re-export the artifact"
            )
    return files


def verify_artifact(artifact_dir: Path, model_name: str = MODEL_NAME) -> dict[str, Any]:
    """Check `compressor.json` and every file it lists (inside the artifact, present, same size and sha256)."""
    # The graph and the runtime's own files (RUNTIME_FILES), when present, must be listed too: a file added after
    # export is as untrusted as a modified one. External data is checked by the runtime, which finds it in the graph.
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    manifest_path = artifact_dir / MANIFEST_NAME
    files = listed_files(manifest, manifest_path)
    for name, entry in files.items():
        check_file(artifact_dir, name, entry)
    if model_name not in files and not _exists(artifact_dir / model_name):
        raise ArtifactError(f"artifact `{artifact_dir}` has no {model_name}; re-export it")
    for name in (model_name, *RUNTIME_FILES):
        if name not in files and _exists(artifact_dir / name):
            raise ArtifactError(f"`{manifest_path}` records no hash for {name}; re-export the artifact")
    return manifest


def check_file(artifact_dir: Path, name: str, entry: dict[str, Any]) -> None:
    """One listed file: inside the artifact, a regular file, with the recorded size and sha256."""
    path = artifact_file(artifact_dir, name)
    if not is_file(path):
        raise ArtifactError(f"artifact `{artifact_dir}` has no {name} (listed in {MANIFEST_NAME}); re-export it")
    modified = f"`{path}` does not match the hash in {MANIFEST_NAME}: it was modified or corrupted; re-export it"
    try:
        size = path.stat().st_size
        # The size first: a swapped file of another size is refused without hashing it (it may be huge).
        if _is_int(entry.get("bytes")) and size != entry["bytes"]:
            raise ArtifactError(modified)
        digest = sha256(path)
    except OSError as err:
        raise ArtifactError(f"`{path}` cannot be read ({err.strerror or err}); check its permissions") from None
    if digest != entry["sha256"]:
        raise ArtifactError(modified)


def read_text(path: Path) -> str:
    """An artifact file's UTF-8 text; unreadable or not UTF-8 is an ArtifactError naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"`{path}` is not UTF-8 text; the artifact is damaged; re-export it") from None
    except OSError as err:
        raise ArtifactError(f"`{path}` cannot be read ({err.strerror or err}); check its permissions") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from an artifact file; anything else (unreadable, not UTF-8, not JSON, …) is an ArtifactError."""
    text = read_text(path)
    try:
        data = json.loads(text)
    # ValueError: JSONDecodeError and integers too long to convert; RecursionError: `[[[[…` nested thousands deep.
    except (ValueError, RecursionError):
        raise ArtifactError(f"`{path}` is not valid JSON; the artifact is damaged; re-export it") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"`{path}` is not a JSON object; the artifact is damaged; re-export it")
    return data


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        raise ArtifactError(f"`{path}` cannot be resolved ({err}); re-export the artifact") from None


def is_file(path: Path) -> bool:
    """Path.is_file() that answers False, rather than raising, for names the OS refuses (too long, say)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _exists(path: Path) -> bool:
    """True for files and symlinks, dangling ones included (those must be listed too, or refused)."""
    try:
        return path.is_symlink() or path.exists()
    except (OSError, ValueError):
        return True  # unreadable or unrepresentable: treat as present, so it is refused as unlisted


def _safe_name(name: object) -> bool:
    """A relative POSIX path that stays inside the artifact: no `..`, no absolute path, no NUL, not the manifest."""
    if not isinstance(name, str) or not name or len(name) > 1024 or "\x00" in name or "\\" in name:
        return False
    parts = name.split("/")
    return not name.startswith("/") and all(p not in ("", ".", "..") for p in parts) and name != MANIFEST_NAME


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def short_repr(value: object, limit: int = 60) -> str:
    """repr() of an untrusted value, cut to fit in a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
