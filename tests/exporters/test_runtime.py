from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compressor.errors import ArtifactError, ConfigError
from exporters.manifest import write_manifest
from exporters.runtime import Runtime, check_external_data, external_locations, softmax
from tests.artifacts import build_tiny_artifact
from tests.models import NEGATIVE, POSITIVE, tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TEXTS = POSITIVE + NEGATIVE + ["", "great " * 200]  # empty input and one past max_length
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def logits_graph(
    width: int = 2,
    *,
    inputs: Sequence[str] = INPUTS,
    rank: int = 2,
    declared: Sequence[int | str] | None = None,
    input_type: int = TensorProto.INT64,
    per_token: bool = False,
) -> onnx.ModelProto:
    """A stand-in for a classifier graph: each row's logits are the sum of its input ids, repeated `width` times.

    Args:
        rank: 1 drops the label axis (logits of shape (batch,)).
        declared: the output shape the graph declares (default: the real one).
        per_token: one logit per token instead: a symbolic width, (batch, sequence).
    """
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    ids = "input_ids" if "input_ids" in inputs else inputs[0]
    nodes = []
    if input_type != TensorProto.INT64:
        nodes.append(helper.make_node("Cast", [ids], ["ids64"], to=TensorProto.INT64))
        ids = "ids64"
    if per_token:
        nodes.append(helper.make_node("Cast", [ids], ["logits"], to=TensorProto.FLOAT))
        real: list[int | str] = ["batch", "sequence"]
    else:
        nodes += [
            helper.make_node("ReduceSum", [ids, "axes"], ["sum"], keepdims=1),
            helper.make_node("Cast", ["sum"], ["one"], to=TensorProto.FLOAT),
        ]
        if rank == 1:
            nodes.append(helper.make_node("Squeeze", ["one", "axes"], ["logits"]))
            real = ["batch"]
        else:
            nodes.append(helper.make_node("Concat", ["one"] * width, ["logits"], axis=1))
            real = ["batch", width]
    graph = helper.make_graph(
        nodes,
        "stand-in",
        [helper.make_tensor_value_info(n, input_type, ["batch", "sequence"]) for n in inputs],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(declared or real))],
        [axes],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def reseal(artifact: Path) -> None:
    """Rewrite the manifest's hashes to match the (modified) files: only the checks after the hash remain."""
    manifest = json.loads((artifact / "compressor.json").read_text(encoding="utf-8"))
    write_manifest(artifact, {k: v for k, v in manifest.items() if k != "files"})


def swap_graph(artifact: Path, model: onnx.ModelProto) -> None:
    """Replace the artifact's model.onnx by `model` and reseal the manifest (as an attacker or a buggy tool would)."""
    onnx.save(model, str(artifact / "model.onnx"))
    reseal(artifact)


def edit_json(path: Path, **changes: object) -> None:
    """Set (or, with None, delete) top-level keys of a JSON file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("rt") / "artifact", seed=3, max_length=32)


def _copy(artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(artifact, tmp_path / "copy"))


def test_logits_equal_pytorch(artifact: Path, tmp_path: Path) -> None:
    model, tokenizer = tiny_model(3), tiny_tokenizer(tmp_path)
    enc = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc).logits.numpy()
    runtime = Runtime(artifact, threads=1)
    got = runtime.logits(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(runtime.encode(TEXTS)["input_ids"], enc["input_ids"].numpy())


def test_pair_inputs_match_pytorch(artifact: Path, tmp_path: Path) -> None:
    model, tokenizer = tiny_model(3), tiny_tokenizer(tmp_path)
    firsts, seconds = POSITIVE, NEGATIVE
    enc = tokenizer(firsts, seconds, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc).logits.numpy()
    runtime = Runtime(artifact, threads=1)
    feed = runtime.encode(firsts, seconds)
    assert feed["token_type_ids"].max() == 1  # the second segment is marked
    np.testing.assert_allclose(runtime.run_feed(feed), expected, atol=1e-4, rtol=0)


def test_encode_truncates_and_pads_to_fixed_length(artifact: Path) -> None:
    runtime = Runtime(artifact)
    feed = runtime.encode(["", "great " * 200], pad_to=16)
    assert {k: v.shape for k, v in feed.items()} == {k: (2, 16) for k in feed}
    assert feed["attention_mask"][0].tolist() == [1, 1] + [0] * 14  # [CLS] [SEP] only
    assert feed["attention_mask"][1].sum() == 16
    assert all(v.dtype == np.int64 for v in feed.values())
    assert runtime.encode(["great " * 200])["input_ids"].shape == (1, 32)  # the manifest's max_length
    with pytest.raises(ConfigError, match="seq_len"):
        runtime.encode(["x"], pad_to=runtime.max_positions + 1)


def test_predict_labels_and_scores(artifact: Path) -> None:
    runtime = Runtime(artifact)
    results = runtime.predict(TEXTS, batch_size=3)
    assert len(results) == len(TEXTS)
    probs = softmax(runtime.logits(TEXTS))
    for result, row in zip(results, probs, strict=True):
        assert result["label"] == ("negative", "positive")[int(row.argmax())]
        assert result["score"] == pytest.approx(float(row.max()), abs=1e-6)
        assert 0.5 <= result["score"] <= 1.0
    assert runtime.predict("so good") == runtime.predict(["so good"])
    assert runtime.predict([]) == []


def test_tampered_model_is_refused(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    data = bytearray((art / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (art / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the hash"):
        Runtime(art)


def test_missing_manifest_is_refused_unless_not_verifying(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    (art / "compressor.json").unlink()
    with pytest.raises(ArtifactError, match="compressor.json"):
        Runtime(art)
    runtime = Runtime(art, verify=False)  # a plain ONNX directory (e.g. an optimum export) for baselines
    assert runtime.max_length == 64  # no manifest: the tokenizer's model_max_length
    assert runtime.predict(["so good"])[0]["label"] in ("negative", "positive")


def test_non_onnx_model_is_refused(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    (art / "model.onnx").write_text("<html>this is not a model</html>\n", encoding="utf-8")
    manifest = json.loads((art / "compressor.json").read_text())
    write_manifest(art, manifest)  # the hash matches: the format check must catch it
    with pytest.raises(ArtifactError, match="not an ONNX model"):
        Runtime(art)


def test_missing_tokenizer_and_bad_threads(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="threads"):
        Runtime(artifact, threads=0)
    with pytest.raises(ArtifactError, match="not found"):
        Runtime(tmp_path / "nope")
    art = _copy(artifact, tmp_path)
    (art / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="tokenizer.json"):
        Runtime(art, verify=False)


def _external_model(directory: Path, location: str) -> Path:
    """A one-MatMul graph whose weight lives in an external file at `location`."""
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    return directory / "model.onnx"


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname", "sub/../../secret.bin"])
def test_external_data_outside_directory_is_refused(tmp_path: Path, location: str) -> None:
    np.eye(4, dtype=np.float32).tofile(tmp_path / "secret.bin")
    model = _external_model(tmp_path / "art", location)
    assert external_locations(model.read_bytes()) == [location]
    with pytest.raises(ArtifactError, match="outside its directory"):
        check_external_data(model)


def test_external_data_inside_directory_is_hash_checked(tmp_path: Path) -> None:
    art = tmp_path / "art"
    model = _external_model(art, "weights.bin")
    np.eye(4, dtype=np.float32).tofile(art / "weights.bin")
    write_manifest(art, {})
    manifest = json.loads((art / "compressor.json").read_text())
    assert check_external_data(model, manifest) == [(art / "weights.bin").resolve()]
    np.ones(16, dtype=np.float32).tofile(art / "weights.bin")
    with pytest.raises(ArtifactError, match="does not match the hash"):
        check_external_data(model, manifest)


def test_external_locations_finds_nested_tensors() -> None:
    """A tensor inside a Constant node inside an If branch is found too."""
    inner = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "c")
    inner.data_location = TensorProto.EXTERNAL
    entry = inner.external_data.add()
    entry.key, entry.value = "location", "../../nested.bin"
    const = helper.make_node("Constant", [], ["c_out"], value=inner)
    branch = helper.make_graph([const], "b", [], [helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [2])])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    data = helper.make_model(graph).SerializeToString()
    assert external_locations(data) == ["../../nested.bin", "../../nested.bin"]
    assert onnx.load_from_string(data).graph.node[0].op_type == "If"


def test_runtime_import_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import exporters.runtime\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'onnx', 'datasets') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


# --- untrusted artifacts: every listed file, config and tokenizer, graph vs labels, paths outside the artifact ------


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"])
def test_every_listed_file_is_verified(artifact: Path, tmp_path: Path, name: str) -> None:
    art = _copy(artifact, tmp_path)
    with open(art / name, "a", encoding="utf-8") as fh:
        fh.write(" ")
    with pytest.raises(ArtifactError, match=f"{name}` does not match the hash in compressor.json"):
        Runtime(art)


def test_swapped_labels_are_refused(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    edit_json(art / "config.json", id2label={"0": "positive", "1": "negative"})
    with pytest.raises(ArtifactError, match="config.json` does not match the hash"):
        Runtime(art)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"id2label": {"negative": "0", "positive": "1"}}, "id2label key 'negative': label ids must be the integers"),
        ({"id2label": {"0": "negative", "01": "positive"}}, "id2label key '01'"),
        ({"id2label": {"0": "negative", "1": None}}, "label None for id 1: label names must be strings"),
        ({"id2label": ["negative", "positive"]}, "not an object of label ids to names"),
        ({"id2label": {}}, "not an object of label ids to names"),
        ({"num_labels": 3}, "num_labels 3 but 2 labels in id2label"),
        ({"num_labels": "2"}, "num_labels '2', not an integer"),
        # no names to list: nothing of that size is built before the graph refuses it (it once took all the memory)
        ({"id2label": None, "label2id": None, "num_labels": 2**31}, r"expected \(batch, 2147483648\) for the"),
        ({"max_position_embeddings": 0}, "max_position_embeddings 0, not an integer of at least 2"),
        (
            {"vocab_size": 10},
            "produces token ids up to 40 but .*vocab_size 10; the tokenizer belongs to another model",
        ),
    ],
)
def test_malformed_config_is_refused(artifact: Path, tmp_path: Path, changes: dict, match: str) -> None:
    art = _copy(artifact, tmp_path)
    edit_json(art / "config.json", **changes)
    reseal(art)
    with pytest.raises(ArtifactError, match=match) as err:
        Runtime(art)
    assert "\n" not in str(err.value)


def test_pad_id_from_config_is_checked(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    edit_json(art / "tokenizer_config.json", pad_token=None)
    edit_json(art / "config.json", pad_token_id=41)
    reseal(art)
    with pytest.raises(ArtifactError, match="pad_token_id 41, beyond its vocab_size 41"):
        Runtime(art)
    edit_json(art / "config.json", pad_token_id=4)
    reseal(art)
    assert Runtime(art).pad_id == 4


def test_labels_without_id2label(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    edit_json(art / "config.json", id2label=None, label2id=None, num_labels=2)
    reseal(art)
    assert Runtime(art).id2label == {0: "LABEL_0", 1: "LABEL_1"}


def test_tokenizer_of_another_model(artifact: Path, tmp_path: Path) -> None:
    """Its ids would index past the embedding: refused at load, naming the tokenizer, not at run in ONNX Runtime."""
    art = _copy(artifact, tmp_path)
    tokenizer = json.loads((art / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["model"]["vocab"] |= {f"word{i}": 41 + i for i in range(10)}
    (art / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    with pytest.raises(ArtifactError, match="tokenizer.json` does not match the hash"):
        Runtime(art)
    with pytest.raises(ArtifactError, match="tokenizer.json` produces token ids up to 50 but .* vocab_size 41"):
        Runtime(art, verify=False)


def test_tokenizer_ids_beyond_the_model_are_refused_before_running(artifact: Path, tmp_path: Path) -> None:
    """Type ids (or special-token ids) the embedding tables do not have: named in the tokenizer, not in ORT."""
    art = _copy(artifact, tmp_path)
    tokenizer = json.loads((art / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["post_processor"]["pair"][-1]["SpecialToken"]["type_id"] = 5
    tokenizer["post_processor"]["special_tokens"]["[CLS]"]["ids"] = [99]
    (art / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    reseal(art)
    runtime = Runtime(art)
    with pytest.raises(ArtifactError, match="tokenizer.json` produced input_ids up to 99 but .* fewer than 41"):
        runtime.predict(["good"])
    tokenizer["post_processor"]["special_tokens"]["[CLS]"]["ids"] = [2]
    (art / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    reseal(art)
    runtime = Runtime(art)
    assert len(runtime.predict(["good"])) == 1  # single texts never reach the odd type id
    with pytest.raises(ArtifactError, match="produced token_type_ids up to 5 but .* fewer than 2; the tokenizer"):
        runtime.logits(["good"], ["bad"])


@pytest.mark.parametrize("text", ["", "{", '{"model": 1}', "[]"], ids=["empty", "truncated", "no-model", "list"])
def test_unloadable_tokenizer(artifact: Path, tmp_path: Path, text: str) -> None:
    art = _copy(artifact, tmp_path)
    (art / "tokenizer.json").write_text(text, encoding="utf-8")
    reseal(art)
    with pytest.raises(ArtifactError, match="tokenizer.json` cannot be loaded as a tokenizer"):
        Runtime(art)


@pytest.mark.parametrize(("value", "expected"), [(1e30, 32), (16, 16), (True, 32), ("64", 32), (1, 32)], ids=str)
def test_tokenizer_max_length_is_read_defensively(
    artifact: Path, tmp_path: Path, value: object, expected: int
) -> None:
    """Without a manifest, model_max_length counts when it is a sensible number; else 128, capped by 32 positions."""
    art = _copy(artifact, tmp_path)
    (art / "compressor.json").unlink()
    edit_json(art / "tokenizer_config.json", model_max_length=value)
    edit_json(art / "config.json", max_position_embeddings=32)
    assert Runtime(art, verify=False).max_length == expected


@pytest.mark.parametrize(
    ("graph", "match"),
    [
        ({"rank": 1}, r"returns logits of shape \(batch,\), expected \(batch, 2\) for the 2 labels in config.json"),
        ({"width": 3}, r"returns logits of shape \(batch, 3\), expected \(batch, 2\)"),
        ({"inputs": ("input_ids",)}, r"has no attention_mask input \(it takes input_ids\)"),
        ({"inputs": ("attention_mask", "token_type_ids")}, "has no input_ids input"),
        ({"inputs": (*INPUTS, "past")}, "expects input\\(s\\) past; the runtime feeds only"),
        ({"input_type": TensorProto.FLOAT}, r"expects input_ids as tensor\(float\)"),
    ],
)
def test_graph_that_does_not_fit_is_refused_at_load(artifact: Path, tmp_path: Path, graph: dict, match: str) -> None:
    art = _copy(artifact, tmp_path)
    swap_graph(art, logits_graph(**graph))
    with pytest.raises(ArtifactError, match=match):
        Runtime(art)


def test_non_float_output_is_refused(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    model = logits_graph()
    cast = helper.make_node("Cast", ["logits"], ["labels"], to=TensorProto.INT64)
    model.graph.node.append(cast)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch", 2]))
    swap_graph(art, model)
    with pytest.raises(ArtifactError, match=r"returns labels as tensor\(int64\), expected float logits"):
        Runtime(art)


@pytest.mark.parametrize("graph", [{"per_token": True}, {"width": 3, "declared": ["batch", 2]}], ids=str)
def test_symbolic_width_is_checked_on_the_first_output(artifact: Path, tmp_path: Path, graph: dict) -> None:
    art = _copy(artifact, tmp_path)
    swap_graph(art, logits_graph(**graph))
    runtime = Runtime(art)  # the declared shape cannot tell
    with pytest.raises(ArtifactError, match=r"returned logits of shape \(2, \d+\) for 2 text\(s\), expected \(2, 2\)"):
        runtime.predict(["a great movie", "so bad"])
    with pytest.raises(ArtifactError, match="expected \\(1, 2\\)"):
        runtime.run_feed(runtime.encode(["good"], pad_to=8))  # the benchmark's path


def test_manifest_inputs_must_match_the_graph(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    swap_graph(art, logits_graph(inputs=("input_ids", "attention_mask")))
    assert Runtime(art).input_names == ["input_ids", "attention_mask"]  # no `inputs` recorded: any allowed set
    manifest = json.loads((art / "compressor.json").read_text(encoding="utf-8"))
    (art / "compressor.json").write_text(json.dumps(manifest | {"inputs": list(INPUTS)}), encoding="utf-8")
    with pytest.raises(ArtifactError, match="takes inputs input_ids, attention_mask but compressor.json records"):
        Runtime(art)
    (art / "compressor.json").write_text(
        json.dumps(manifest | {"inputs": ["attention_mask", "input_ids"]}), encoding="utf-8"
    )
    assert Runtime(art).predict(["good"])[0]["label"] in ("negative", "positive")  # order does not matter


def test_nan_logits_are_refused(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    model = logits_graph()
    model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "nan"))
    model.graph.node.append(helper.make_node("Add", ["logits", "nan"], ["scores"]))
    model.graph.output[0].name = "scores"
    swap_graph(art, model)
    runtime = Runtime(art)
    with pytest.raises(ArtifactError, match="returned NaN or infinite logits"):
        runtime.predict(["good"])


def test_graph_symlinked_outside_is_refused(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    (art / "model.onnx").rename(tmp_path / "outside.onnx")
    (art / "model.onnx").symlink_to(tmp_path / "outside.onnx")
    with pytest.raises(ArtifactError, match="model.onnx` resolves to .*outside.onnx`, outside the artifact directory"):
        Runtime(art)
    (art / "compressor.json").unlink()
    with pytest.raises(ArtifactError, match="outside the artifact directory"):
        Runtime(art, verify=False)
    with pytest.raises(ArtifactError, match="outside the artifact directory"):
        check_external_data(art / "model.onnx")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json"])
def test_files_symlinked_outside_are_refused_without_verification(artifact: Path, tmp_path: Path, name: str) -> None:
    art = _copy(artifact, tmp_path)
    (art / "compressor.json").unlink()
    (art / name).rename(tmp_path / name)
    (art / name).symlink_to(tmp_path / name)
    with pytest.raises(ArtifactError, match=f"{name}` resolves to .*outside the artifact directory"):
        Runtime(art, verify=False)


def test_symlinked_external_data_is_refused(tmp_path: Path) -> None:
    np.eye(4, dtype=np.float32).tofile(tmp_path / "secret.bin")
    model = _external_model(tmp_path / "art", "weights.bin")
    (tmp_path / "art" / "weights.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(ArtifactError, match="reads external data from `weights.bin`, outside its directory"):
        check_external_data(model)


def test_external_data_must_be_listed(tmp_path: Path) -> None:
    art = tmp_path / "art"
    model = _external_model(art, "weights.bin")
    write_manifest(art, {})
    np.eye(4, dtype=np.float32).tofile(art / "weights.bin")  # written after the manifest: not listed
    manifest = json.loads((art / "compressor.json").read_text())
    with pytest.raises(ArtifactError, match="records no hash for weights.bin"):
        check_external_data(model, manifest, hashed=True)
