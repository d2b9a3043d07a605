"""compressor.json: every listed file is checked (inside the artifact, present, same size and hash), and a malformed
manifest is one ArtifactError. Small fake artifacts (a few bytes per file): no ONNX needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import exporters.manifest as manifest_module
from compressor.errors import ArtifactError
from exporters.manifest import (
    MANIFEST_NAME,
    artifact_file,
    read_manifest,
    verify_artifact,
    write_manifest,
)

FILES = {
    "model.onnx": b"\x08\x07graph bytes",
    "config.json": b'{"id2label": {"0": "negative", "1": "positive"}}',
    "tokenizer.json": b"{}",
    "vocab.txt": b"[PAD]\n[UNK]\n",
}


@pytest.fixture
def art(tmp_path: Path) -> Path:
    path = tmp_path / "art"
    path.mkdir()
    for name, data in FILES.items():
        (path / name).write_bytes(data)
    write_manifest(path, {"max_length": 32, "inputs": ["input_ids", "attention_mask"]})
    return path


def _edit_manifest(art: Path, **changes: object) -> None:
    data = json.loads((art / MANIFEST_NAME).read_text(encoding="utf-8"))
    data.update(changes)
    (art / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")


def _entry(art: Path, name: str) -> dict:
    return json.loads((art / MANIFEST_NAME).read_text(encoding="utf-8"))["files"][name]


def test_intact_artifact_verifies(art: Path) -> None:
    manifest = verify_artifact(art)
    assert sorted(manifest["files"]) == sorted(FILES)


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_listed_file_is_hash_checked(art: Path, name: str) -> None:
    data = bytearray((art / name).read_bytes())
    data[-1] ^= 0x01  # same size: only the hash can tell
    (art / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{name}` does not match the hash in compressor.json.*re-export it"):
        verify_artifact(art)


def test_size_mismatch_is_refused_without_hashing(art: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (art / "vocab.txt").write_bytes(b"x" * 10_000)

    real = manifest_module.sha256

    def sha256(path: Path) -> str:
        assert path.name != "vocab.txt", "a file of the wrong size was hashed"
        return real(path)

    monkeypatch.setattr(manifest_module, "sha256", sha256)
    with pytest.raises(ArtifactError, match="vocab.txt` does not match the hash"):
        verify_artifact(art)


@pytest.mark.parametrize("name", ["vocab.txt", "config.json"])
def test_listed_file_missing(art: Path, name: str) -> None:
    (art / name).unlink()
    with pytest.raises(ArtifactError, match=f"has no {name} \\(listed in compressor.json\\); re-export it"):
        verify_artifact(art)


def test_listed_file_replaced_by_a_directory(art: Path) -> None:
    (art / "vocab.txt").unlink()
    (art / "vocab.txt").mkdir()
    with pytest.raises(ArtifactError, match="has no vocab.txt"):
        verify_artifact(art)


@pytest.mark.parametrize("name", ["model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json"])
def test_runtime_file_not_listed(art: Path, name: str) -> None:
    """A file the runtime reads, added (or unlisted) after export, is as untrusted as a modified one."""
    (art / name).write_bytes(b"{}")
    data = json.loads((art / MANIFEST_NAME).read_text(encoding="utf-8"))
    data["files"].pop(name, None)
    (art / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ArtifactError, match=f"records no hash for {name}; re-export the artifact"):
        verify_artifact(art)


def test_model_absent_and_unlisted(art: Path) -> None:
    (art / "model.onnx").unlink()
    data = json.loads((art / MANIFEST_NAME).read_text(encoding="utf-8"))
    del data["files"]["model.onnx"]
    (art / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ArtifactError, match="has no model.onnx; re-export it"):
        verify_artifact(art)


def test_other_files_may_be_added(art: Path) -> None:
    """Only the files the runtime reads must be listed: a README dropped next to them changes nothing."""
    (art / "README.md").write_text("notes\n", encoding="utf-8")
    verify_artifact(art)


def test_symlink_outside_is_refused(art: Path, tmp_path: Path) -> None:
    (art / "config.json").rename(tmp_path / "config.json")
    (art / "config.json").symlink_to(tmp_path / "config.json")  # same bytes: the hash alone would pass
    with pytest.raises(ArtifactError, match="config.json` resolves to .*outside the artifact directory"):
        verify_artifact(art)


def test_symlink_inside_is_accepted(art: Path) -> None:
    (art / "vocab.txt").rename(art / "vocab-real.txt")
    (art / "vocab.txt").symlink_to("vocab-real.txt")
    write_manifest(art, {})
    verify_artifact(art)
    assert artifact_file(art, "vocab.txt") == art / "vocab.txt"


def test_symlink_loop_is_refused(art: Path) -> None:
    (art / "vocab.txt").unlink()
    (art / "vocab.txt").symlink_to("vocab.txt")
    with pytest.raises(ArtifactError, match="vocab.txt"):
        verify_artifact(art)


def test_manifest_symlinked_outside(art: Path, tmp_path: Path) -> None:
    (art / MANIFEST_NAME).rename(tmp_path / MANIFEST_NAME)
    (art / MANIFEST_NAME).symlink_to(tmp_path / MANIFEST_NAME)
    with pytest.raises(ArtifactError, match="compressor.json` resolves to .*outside the artifact directory"):
        read_manifest(art)


def test_artifact_directory_itself_may_be_a_symlink(art: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(art)
    verify_artifact(tmp_path / "link")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"files": None}, "has no `files` table"),
        ({"files": ["model.onnx"]}, "has no `files` table"),
        (
            {"files": {"../model.onnx": {"sha256": "0" * 64}}},
            "lists '../model.onnx', not the name of a file inside the artifact",
        ),
        ({"files": {"/etc/passwd": {"sha256": "0" * 64}}}, "lists '/etc/passwd', not the name of a file inside"),
        ({"files": {"a\x00b": {"sha256": "0" * 64}}}, "not the name of a file inside the artifact"),
        ({"files": {"": {"sha256": "0" * 64}}}, "not the name of a file inside the artifact"),
        ({"files": {"compressor.json": {"sha256": "0" * 64}}}, "not the name of a file inside the artifact"),
        ({"files": {"model.onnx": "0" * 64}}, "records no sha256 for 'model.onnx'"),
        ({"files": {"model.onnx": {"sha256": "XYZ"}}}, "records 'XYZ' as the sha256 of 'model.onnx', not a sha256"),
        ({"files": {"model.onnx": {"sha256": "0" * 64, "bytes": -1}}}, "records -1 as the size of 'model.onnx'"),
        ({"files": {"model.onnx": {"sha256": "0" * 64, "bytes": "12"}}}, "records '12' as the size"),
        ({"schema": 2}, "has schema 2, newer than this compressor; upgrade it"),
        ({"schema": "1"}, "has schema '1', not a schema number"),
        ({"schema": True}, "has schema True, not a schema number"),
        ({"schema": 0}, "has schema 0, not a schema number"),
        ({"kind": "model"}, "is not a compressor manifest"),
        ({"max_length": "32"}, "records max_length '32', not an integer of at least 2"),
        ({"max_length": 1}, "records max_length 1"),
        ({"max_length": 32.0}, "records max_length 32.0"),
        ({"inputs": "input_ids"}, "records inputs 'input_ids', not a list of input names"),
        ({"inputs": [1, 2]}, "records inputs \\[1, 2\\], not a list of input names"),
    ],
)
def test_malformed_manifest(art: Path, changes: dict, match: str) -> None:
    _edit_manifest(art, **changes)
    with pytest.raises(ArtifactError, match=match) as err:
        verify_artifact(art)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text",
    ["", "[" * 100_000, '{"schema": 1, "kind": "compressor-artifact", "x": ' + "9" * 5000 + "}", "[]", "null"],
    ids=["empty", "deeply-nested", "huge-integer", "list", "null"],
)
def test_manifest_not_a_json_object(art: Path, text: str) -> None:
    (art / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(ArtifactError, match="compressor.json` is not (valid JSON|a JSON object)"):
        read_manifest(art)


def test_manifest_not_utf8(art: Path) -> None:
    (art / MANIFEST_NAME).write_bytes(b'{"kind": "\xff\xfe"}')
    with pytest.raises(ArtifactError, match="is not UTF-8 text"):
        read_manifest(art)


def test_manifest_is_a_directory(art: Path) -> None:
    (art / MANIFEST_NAME).unlink()
    (art / MANIFEST_NAME).mkdir()
    with pytest.raises(ArtifactError, match="has no compressor.json"):
        read_manifest(art)
