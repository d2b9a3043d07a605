from __future__ import annotations

import json
import shutil
import subprocess
import sys
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
