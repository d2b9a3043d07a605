"""Property tests of the artifact's user-editable files: compressor.json (read_manifest, verify_artifact, inspect) and
config.json, tokenizer_config.json and tokenizer.json as the runtime reads them.

Thousands of generated and damaged files in all (structured edits at any depth, byte-level damage, random JSON,
files swapped, deleted, turned into directories or symlinks); the only allowed outcomes are success or a
`CompressorError` with a one-line message, never another exception. ONNX Runtime sessions are the slow part of a
load, so the runtime examples reuse one session (the graph is not what is mutated here).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exporters.runtime as runtime_module
from compressor.errors import CompressorError
from compressor.inspection import inspect_artifact
from exporters.manifest import MANIFEST_NAME, read_manifest, verify_artifact
from exporters.runtime import Runtime

# No example database: it would be a `.hypothesis` directory in the work tree.
FAST = settings(max_examples=700, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Values that sit on the edges of the checks: types JSON confuses, bounds, sizes that overflow.
EDGE = [0, 1, 2, -1, 3, 41, 64, 2**31, 2**63, 10**30, 1.5, 2.0, float("nan"), float("inf"), True, False, None]
EDGE += ["", "0", "1", "2", "01", "-1", "label", "../x", "/etc/passwd", "a\x00b", "compressor.json", "\u2028", "é"]
scalars = st.one_of(
    st.sampled_from(EDGE),
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(EDGE[17:]), st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=12,
)
NASTY_BYTES = [b"\xff", b"\xc3", b"\x00", b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\xef\xbb\xbf", b"9" * 5000]


@st.composite
def edited_json(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """`value` with one change somewhere inside it: a value replaced, a key deleted or added, or nothing (rarely)."""
    containers = isinstance(value, dict | list) and len(value) > 0
    if containers and depth < 5 and draw(st.integers(0, 3)) > 0:  # mostly descend: the interesting keys are deep
        if isinstance(value, dict):
            key = draw(st.sampled_from(sorted(value, key=str)))
            action = draw(st.sampled_from(["descend", "descend", "replace", "delete", "add"]))
            copy = dict(value)
            if action == "descend":
                copy[key] = draw(edited_json(value[key], depth + 1))
            elif action == "replace":
                copy[key] = draw(json_values)
            elif action == "delete":
                del copy[key]
            else:
                copy[draw(st.one_of(st.sampled_from(EDGE[17:]), st.text(max_size=8)))] = draw(json_values)
            return copy
        index = draw(st.integers(0, len(value) - 1))
        copy_list = list(value)
        copy_list[index] = draw(edited_json(value[index], depth + 1))
        return copy_list
    return draw(json_values)


@st.composite
def damaged_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` truncated, with bytes flipped, inserted or deleted."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip" and data:
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif kind == "insert":
            data = data[:at] + draw(st.one_of(st.sampled_from(NASTY_BYTES), st.binary(min_size=1, max_size=4))) + data[at:]
        else:
            data = data[:at] + data[at + draw(st.integers(1, 8)) :]
    return data


def file_contents(original: Any) -> st.SearchStrategy[bytes]:
    """New contents for a JSON file that held `original`: mostly structured edits, also damage and random JSON."""
    text = json.dumps(original, indent=2).encode()
    return st.one_of(
        edited_json(original).map(lambda v: json.dumps(v).encode()),
        edited_json(original).map(lambda v: json.dumps(v).encode()),
        damaged_bytes(text),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
    )


def assert_clean(call: Callable[[], Any]) -> Any:
    """Run `call`: success, or a CompressorError whose message is one line; any other exception fails the test."""
    try:
        return call()
    except CompressorError as err:
        assert str(err) and "\n" not in str(err).strip(), repr(str(err))
        return None


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, artifact: Path) -> Iterator[Callable[[], Path]]:
    """A fresh copy of the intact artifact, for each example."""
    root = tmp_path_factory.mktemp("props")

    def fresh() -> Path:
        target = root / "art"
        shutil.rmtree(target, ignore_errors=True)
        return Path(shutil.copytree(artifact, target, symlinks=True))

    yield fresh


@contextmanager
def one_session(artifact: Path) -> Iterator[None]:
    """Every Runtime built inside reuses one ONNX Runtime session of the intact graph (20 ms saved per example)."""
    session = runtime_module._session(artifact / "model.onnx", 1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime_module, "_session", lambda path, threads: session)
        yield


def _load_and_predict(path: Path) -> None:
    runtime = Runtime(path, threads=1, verify=False)
    results = runtime.predict(["a great movie", "", "so bad " * 40], batch_size=2)
    assert len(results) == 3 and all(r["label"] in runtime.id2label.values() for r in results)


# --- compressor.json -----------------------------------------------------------------------------------------------


def test_manifest_edits(work: Callable[[], Path], artifact: Path) -> None:
    original = json.loads((artifact / MANIFEST_NAME).read_text(encoding="utf-8"))
    art = work()

    @FAST
    @given(contents=file_contents(original))
    def check(contents: bytes) -> None:
        (art / MANIFEST_NAME).write_bytes(contents)
        manifest = assert_clean(lambda: verify_artifact(art))
        if manifest is not None:
            assert isinstance(manifest, dict) and assert_clean(lambda: read_manifest(art)) == manifest

    check()


@st.composite
def file_damage(draw: st.DrawFn, names: list[str]) -> list[tuple[str, str, bytes]]:
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(names),
                st.sampled_from(["delete", "directory", "outside", "inside", "loop", "dangling", "damage", "empty"]),
                st.binary(max_size=4),
            ),
            min_size=1,
            max_size=3,
        )
    )


def _damage_file(art: Path, name: str, kind: str, chunk: bytes) -> None:
    path = art / name
    if kind == "damage" and path.is_file():
        path.write_bytes(path.read_bytes()[: len(chunk) * 7] + chunk)
        return
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    if kind == "directory":
        path.mkdir()
    elif kind == "outside":
        outside = art.parent / f"outside-{name}"
        outside.write_bytes(chunk)
        path.symlink_to(outside)
    elif kind == "inside":
        path.symlink_to(MANIFEST_NAME if name != MANIFEST_NAME else "config.json")
    elif kind == "loop":
        path.symlink_to(name)
    elif kind == "dangling":
        path.symlink_to("no-such-file")
    elif kind == "empty":
        path.write_bytes(b"")


def test_artifact_file_damage(work: Callable[[], Path], artifact: Path) -> None:
    """Files deleted, replaced by directories, symlinked (outside, inside, in a loop, nowhere), damaged: verification
    refuses cleanly, and accepts only when every listed file is intact and inside."""
    names = sorted(p.name for p in artifact.iterdir())

    @SLOW
    @given(damage=file_damage(names))
    def check(damage: list[tuple[str, str, bytes]]) -> None:
        art = work()
        for name, kind, chunk in damage:
            _damage_file(art, name, kind, chunk)
        if assert_clean(lambda: verify_artifact(art)) is not None:
            for name in names:  # accepted: only an inside symlink to identical bytes could have survived
                assert (art / name).resolve().is_relative_to(art.resolve())
                assert (art / name).read_bytes() == (artifact / name).read_bytes()

    check()


def test_inspect_describes_any_manifest(work: Callable[[], Path], artifact: Path) -> None:
    """`inspect` is the diagnostic: it describes an artifact whatever the manifest's descriptive fields hold."""
    original = json.loads((artifact / MANIFEST_NAME).read_text(encoding="utf-8"))
    descriptive = ("stages", "structure", "source", "params", "quantization", "fusion", "accuracy", "latency")
    art = work()

    @settings(SLOW, max_examples=80)
    @given(key=st.sampled_from(descriptive), value=json_values)
    def check(key: str, value: Any) -> None:
        (art / MANIFEST_NAME).write_text(json.dumps(original | {key: value}), encoding="utf-8")
        info = assert_clean(lambda: inspect_artifact(art))
        assert info is not None and info["integrity"] == "ok"
        json.dumps(info)  # what `inspect --json` prints

    with one_session(artifact):
        check()


# --- config.json, tokenizer_config.json, tokenizer.json as the runtime reads them ------------------------------------


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
def test_runtime_config_edits(work: Callable[[], Path], artifact: Path, name: str) -> None:
    original = json.loads((artifact / name).read_text(encoding="utf-8"))
    art = work()
    (art / MANIFEST_NAME).unlink()  # no hashes: the parsers themselves face the edits

    @FAST
    @given(contents=file_contents(original))
    def check(contents: bytes) -> None:
        (art / name).write_bytes(contents)
        assert_clean(lambda: _load_and_predict(art))

    with one_session(artifact):
        check()


def test_runtime_config_label_edits(work: Callable[[], Path], artifact: Path) -> None:
    """The fields the runtime reads from config.json, with values drawn from their edges, together."""
    original = json.loads((artifact / "config.json").read_text(encoding="utf-8"))
    art = work()
    (art / MANIFEST_NAME).unlink()
    labels = st.one_of(
        st.dictionaries(st.one_of(st.sampled_from(["0", "1", "2", "01", "-1", " 1"]), st.text(max_size=3)), scalars),
        json_values,
    )
    fields = st.fixed_dictionaries(
        {},
        optional={
            "id2label": labels,
            "num_labels": scalars,
            "vocab_size": scalars,
            "max_position_embeddings": scalars,
            "pad_token_id": scalars,
        },
    )

    @FAST
    @given(changes=fields)
    def check(changes: dict[str, Any]) -> None:
        (art / "config.json").write_text(json.dumps(original | changes), encoding="utf-8")
        assert_clean(lambda: _load_and_predict(art))

    with one_session(artifact):
        check()


def test_tokenizer_edits(work: Callable[[], Path], artifact: Path) -> None:
    original = json.loads((artifact / "tokenizer.json").read_text(encoding="utf-8"))
    art = work()
    (art / MANIFEST_NAME).unlink()

    @settings(FAST, max_examples=400)
    @given(contents=file_contents(original))
    def check(contents: bytes) -> None:
        (art / "tokenizer.json").write_bytes(contents)
        assert_clean(lambda: _load_and_predict(art))

    with one_session(artifact):
        check()


def test_symlinked_files_never_read_from_outside(work: Callable[[], Path], artifact: Path) -> None:
    """Whatever mix of files is symlinked outside, a Runtime that loads never read one of them."""
    names = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.onnx", MANIFEST_NAME]

    @settings(SLOW, max_examples=40)
    @given(linked=st.lists(st.sampled_from(names), unique=True), verify=st.booleans())
    def check(linked: list[str], verify: bool) -> None:
        art = work()
        for name in linked:
            outside = art.parent / f"outside-{name}"
            shutil.copyfile(art / name, outside)
            os.unlink(art / name)
            (art / name).symlink_to(outside)
        loaded = assert_clean(lambda: Runtime(art, threads=1, verify=verify))
        assert (loaded is not None) == (not linked or (not verify and linked == [MANIFEST_NAME] and False)), linked

    with one_session(artifact):
        check()
