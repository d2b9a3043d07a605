"""Property tests of the artifact's user-editable files: compressor.json (read_manifest, verify_artifact, inspect) and
config.json, tokenizer_config.json and tokenizer.json as the runtime reads them.

Thousands of generated and damaged files in all (structured edits at any depth, byte-level damage, random JSON,
files swapped, deleted, turned into directories or symlinks); the only allowed outcomes are success or a
`CompressorError` with a one-line message, never another exception (`--hypothesis-show-statistics` counts the
outcomes). ONNX Runtime sessions are the slow part of a load, so the runtime examples reuse one session (the graph
is not what is mutated here; test_runtime.py and test_artifacts.py cover it).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import exporters.runtime as runtime_module
from compressor.errors import CompressorError
from compressor.inspection import inspect_artifact
from exporters.manifest import MANIFEST_NAME, read_manifest, verify_artifact
from exporters.runtime import Runtime

# No example database: it would be a `.hypothesis` directory in the work tree.
FAST = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

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
NASTY_BYTES = [
    b"\xff",
    b"\xc3",
    b"\x00",
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b",",
    b":",
    b"\\",
    b"\xef\xbb\xbf",
    b"9" * 5000,
]


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
            data = (
                data[:at]
                + draw(st.one_of(st.sampled_from(NASTY_BYTES), st.binary(min_size=1, max_size=4)))
                + data[at:]
            )
        else:
            data = data[:at] + data[at + draw(st.integers(1, 8)) :]
    return data


_CONTENTS: dict[Path, st.SearchStrategy[bytes]] = {}


def file_contents(path: Path) -> st.SearchStrategy[bytes]:
    """New contents for the JSON file `path`: mostly structured edits, also damage and random JSON (built once)."""
    if path not in _CONTENTS:
        original = json.loads(path.read_text(encoding="utf-8"))
        edits = edited_json(original).map(lambda v: json.dumps(v).encode())
        _CONTENTS[path] = st.one_of(
            edits,
            edits,
            edits,
            damaged_bytes(json.dumps(original, indent=2).encode()),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=64),
        )
    return _CONTENTS[path]


def assert_clean(call: Callable[[], Any]) -> Any:
    """Run `call`: success, or a CompressorError whose message is one line; any other exception fails the test."""
    try:
        result = call()
    except CompressorError as err:
        assert str(err) and "\n" not in str(err).strip(), repr(str(err))
        event(f"refused: {type(err).__name__} {_gist(str(err))}")
        return None
    event("accepted")
    return result


def _gist(message: str) -> str:
    """The message without its paths, to count the kinds of refusal (`--hypothesis-show-statistics`)."""
    return " ".join(word for word in message.split() if "/" not in word)[:70]


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory, artifact: Path) -> Callable[..., Path]:
    """`copies(name)`: a copy of the intact artifact under that name, made once (`fresh=True`: again)."""
    root = tmp_path_factory.mktemp("props")

    def copy(name: str, *, fresh: bool = False, manifest: bool = True) -> Path:
        target = root / name
        if fresh or not target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(artifact, target, symlinks=True)
            if not manifest:  # no hashes: the parsers themselves face the edits
                (target / MANIFEST_NAME).unlink()
        return target

    return copy


@pytest.fixture(scope="module")
def one_session(artifact: Path) -> Iterator[None]:
    """Every Runtime built by a test using this reuses one ONNX Runtime session of the intact graph and skips the
    external-data scan of the graph (it has none): 20 ms less per example."""
    session = runtime_module._session(artifact / "model.onnx", 1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime_module, "_session", lambda path, threads, flush_denormals=False: session)
        patch.setattr(runtime_module, "check_external_data", lambda *args, **kwargs: [])
        yield


def _original(artifact: Path, name: str) -> Any:
    return json.loads((artifact / name).read_text(encoding="utf-8"))


def _load_and_predict(path: Path) -> None:
    runtime = Runtime(path, threads=1, verify=False)
    results = runtime.predict(["a great movie", "", "so bad " * 40], batch_size=2)
    assert len(results) == 3 and all(r["label"] in runtime.id2label.values() for r in results)


# --- compressor.json -----------------------------------------------------------------------------------------------


@FAST
@given(data=st.data())
def test_manifest_edits(data: st.DataObject, copies: Callable[..., Path], artifact: Path) -> None:
    art = copies("manifest")
    (art / MANIFEST_NAME).write_bytes(data.draw(file_contents(artifact / MANIFEST_NAME)))
    manifest = assert_clean(lambda: verify_artifact(art))
    if manifest is not None:
        assert isinstance(manifest, dict) and assert_clean(lambda: read_manifest(art)) == manifest


sha256s = st.one_of(st.sampled_from(["0" * 64, "A" * 64, "0" * 63, ""]), st.text("0123456789abcdef", max_size=66))
file_names = st.one_of(
    st.sampled_from(["model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "x/y"]),
    st.sampled_from(EDGE[17:]),
    st.text(max_size=8),
)
entries = st.one_of(
    st.fixed_dictionaries({"sha256": sha256s}, optional={"bytes": scalars}),
    json_values,
)
manifest_fields = st.fixed_dictionaries(
    {},
    optional={
        "files": st.one_of(st.dictionaries(file_names, entries, max_size=4), json_values),
        "schema": st.one_of(st.just(1), scalars),  # valid half the time, so that the checks after it run too
        "kind": st.sampled_from(["compressor-artifact"] * 8 + ["", "model"]),
        "max_length": st.one_of(st.just(32), scalars),
        "inputs": st.one_of(st.lists(st.sampled_from(["input_ids", "attention_mask", "x", ""])), json_values),
    },
)


@FAST
@given(changes=manifest_fields, keep=st.booleans())
def test_manifest_fields(changes: dict[str, Any], keep: bool, copies: Callable[..., Path], artifact: Path) -> None:
    """The fields verification reads, drawn from their edges; `keep`: added to the real files table, not instead."""
    art = copies("manifest-fields")
    manifest = _original(artifact, MANIFEST_NAME)
    if keep and isinstance(changes.get("files"), dict):
        changes["files"] = manifest["files"] | changes["files"]
    (art / MANIFEST_NAME).write_text(json.dumps(manifest | changes), encoding="utf-8")
    assert_clean(lambda: verify_artifact(art))


DAMAGE = ["delete", "directory", "outside", "inside", "loop", "dangling", "damage", "empty"]


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


@SLOW
@given(data=st.data())
def test_artifact_file_damage(data: st.DataObject, copies: Callable[..., Path], artifact: Path) -> None:
    """Files deleted, replaced by directories, symlinked (outside, inside, in a loop, nowhere) or damaged: refused
    cleanly; accepted only when every file is intact and inside."""
    names = sorted(p.name for p in artifact.iterdir())
    damage = data.draw(
        st.lists(
            st.tuples(st.sampled_from(names), st.sampled_from(DAMAGE), st.binary(max_size=4)), min_size=1, max_size=3
        )
    )
    art = copies("damage", fresh=True)
    for name, kind, chunk in damage:
        _damage_file(art, name, kind, chunk)
    if assert_clean(lambda: verify_artifact(art)) is not None:
        for name in names:
            assert (art / name).resolve().is_relative_to(art.resolve())
            assert (art / name).read_bytes() == (artifact / name).read_bytes()


DESCRIPTIVE = ("stages", "structure", "source", "params", "quantization", "fusion", "accuracy", "latency")


@settings(SLOW, max_examples=60)
@given(key=st.sampled_from(DESCRIPTIVE), value=json_values)
def test_inspect_describes_any_manifest(
    key: str, value: Any, copies: Callable[..., Path], artifact: Path, one_session: None
) -> None:
    """`inspect` is the diagnostic: it describes an artifact whatever the manifest's descriptive fields hold."""
    art = copies("inspect")
    (art / MANIFEST_NAME).write_text(json.dumps(_original(artifact, MANIFEST_NAME) | {key: value}), encoding="utf-8")
    info = assert_clean(lambda: inspect_artifact(art))
    assert info is not None and info["integrity"] == "ok"
    json.dumps(info)  # what `inspect --json` prints


# --- config.json, tokenizer_config.json, tokenizer.json as the runtime reads them ------------------------------------


@FAST
@given(data=st.data())
def test_config_edits(data: st.DataObject, copies: Callable[..., Path], artifact: Path, one_session: None) -> None:
    art = copies("config", manifest=False)
    (art / "config.json").write_bytes(data.draw(file_contents(artifact / "config.json")))
    assert_clean(lambda: _load_and_predict(art))


label_maps = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(["0", "1", "2", "01", "-1", " 1"]), st.text(max_size=3)), scalars),
    json_values,
)
config_fields = st.fixed_dictionaries(
    {},
    optional={
        "id2label": label_maps,
        "num_labels": scalars,
        "vocab_size": scalars,
        "max_position_embeddings": scalars,
        "pad_token_id": scalars,
    },
)


@FAST
@given(changes=config_fields)
def test_config_fields(
    changes: dict[str, Any], copies: Callable[..., Path], artifact: Path, one_session: None
) -> None:
    """The fields the runtime reads from config.json, drawn from their edges, together."""
    art = copies("fields", manifest=False)
    (art / "config.json").write_text(json.dumps(_original(artifact, "config.json") | changes), encoding="utf-8")
    assert_clean(lambda: _load_and_predict(art))


@FAST
@given(data=st.data())
def test_tokenizer_config_edits(
    data: st.DataObject, copies: Callable[..., Path], artifact: Path, one_session: None
) -> None:
    art = copies("tokenizer-config", manifest=False)
    contents = data.draw(file_contents(artifact / "tokenizer_config.json"))
    (art / "tokenizer_config.json").write_bytes(contents)
    assert_clean(lambda: _load_and_predict(art))


@settings(FAST, max_examples=200)
@given(data=st.data())
def test_tokenizer_edits(data: st.DataObject, copies: Callable[..., Path], artifact: Path, one_session: None) -> None:
    art = copies("tokenizer", manifest=False)
    (art / "tokenizer.json").write_bytes(data.draw(file_contents(artifact / "tokenizer.json")))
    assert_clean(lambda: _load_and_predict(art))


ids = st.one_of(st.integers(0, 60), st.sampled_from([-1, 2**32, 2**64, 1.5, "2", None]))


@st.composite
def tokenizer_changes(draw: st.DrawFn, original: dict[str, Any]) -> dict[str, Any]:
    """tokenizer.json with the values it is loadable with pushed to their edges: ids beyond the vocabulary, an
    unknown [UNK], type ids beyond the model's two, special tokens with odd ids."""
    tok = json.loads(json.dumps(original))
    vocab = tok["model"]["vocab"]
    for word in draw(st.lists(st.sampled_from(sorted(vocab)), max_size=3)):
        vocab[word] = draw(ids)
    if draw(st.booleans()):
        vocab[draw(st.text(min_size=1, max_size=4))] = draw(ids)
    if draw(st.booleans()):
        tok["model"]["unk_token"] = draw(st.sampled_from(["[UNK]", "[MISSING]", "", "the"]))
    if draw(st.booleans()):
        tok["model"]["max_input_chars_per_word"] = draw(ids)
    post = tok["post_processor"]
    for item in post["single"] + post["pair"]:
        if draw(st.integers(0, 4)) == 0:
            next(iter(item.values()))["type_id"] = draw(ids)
    for special in post["special_tokens"].values():
        if draw(st.integers(0, 3)) == 0:
            special["ids"] = [draw(ids)]
    for added in tok["added_tokens"]:
        if draw(st.integers(0, 4)) == 0:
            added["id"] = draw(ids)
    return tok


@settings(FAST, max_examples=200)
@given(data=st.data())
def test_tokenizer_fields(data: st.DataObject, copies: Callable[..., Path], artifact: Path, one_session: None) -> None:
    art = copies("tokenizer-fields", manifest=False)
    tok = data.draw(tokenizer_changes(_original(artifact, "tokenizer.json")))
    (art / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    assert_clean(lambda: _load_and_predict(art))


LINKABLE = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.onnx", MANIFEST_NAME]


@settings(SLOW, max_examples=40)
@given(linked=st.lists(st.sampled_from(LINKABLE), unique=True), verify=st.booleans())
def test_nothing_is_read_from_outside(
    linked: list[str], verify: bool, copies: Callable[..., Path], one_session: None
) -> None:
    """Whatever mix of files is symlinked outside the artifact (same bytes), the runtime refuses to load it."""
    art = copies("linked", fresh=True)
    for name in linked:
        outside = art.parent / f"outside-{name}"
        shutil.copyfile(art / name, outside)
        os.unlink(art / name)
        (art / name).symlink_to(outside)
    loaded = assert_clean(lambda: Runtime(art, threads=1, verify=verify))
    assert (loaded is not None) == (not linked), linked
