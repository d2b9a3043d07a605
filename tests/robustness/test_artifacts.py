"""Untrusted artifacts and run directories: missing or tampered manifests, files that are not ONNX, external data
that points outside the artifact. `predict` and `benchmark` refuse them; `inspect` describes the damage."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx.external_data_helper import convert_model_to_external_data

from exporters.manifest import write_manifest
from tests.robustness.harness import expect_refusal, expect_success


def _manifest(artifact: Path) -> dict:
    return json.loads((artifact / "compressor.json").read_text(encoding="utf-8"))


def _reseal(artifact: Path) -> None:
    """Rewrite the manifest's hashes so they match the (modified) files: only the checks after the hash remain."""
    write_manifest(artifact, {k: v for k, v in _manifest(artifact).items() if k != "files"})


def _external(artifact: Path, location: str) -> None:
    """Move the weights to external data, then point every tensor at `location`, and reseal the manifest."""
    model = onnx.load(str(artifact / "model.onnx"))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save(model, str(artifact / "model.onnx"))
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(artifact / "model.onnx"))
    _reseal(artifact)


def test_artifact_missing(cli, tmp_path: Path) -> None:
    result = cli("predict", tmp_path / "artifact", "a great movie", "-q")
    expect_refusal(
        result,
        case="artifact directory does not exist",
        code=1,
        problem="not found",
        fix="pass a directory written by `compressor export`",
    )


def test_manifest_missing(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "no-manifest")
    (damaged / "compressor.json").unlink()
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result, case="artifact without compressor.json", code=1, problem="has no compressor.json", fix="re-export it"
    )
    assert result.out == ""


def test_manifest_hash_tampered(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "tampered-manifest")
    manifest = _manifest(damaged)
    manifest["files"]["model.onnx"]["sha256"] = "0" * 64
    (damaged / "compressor.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="compressor.json with a different hash for model.onnx",
        code=1,
        problem="does not match the hash in compressor.json",
        fix="re-export it",
    )


def test_manifest_without_hash(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "no-hash")
    manifest = _manifest(damaged)
    del manifest["files"]["model.onnx"]
    (damaged / "compressor.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = cli("benchmark", damaged, "--runs", "1", "--warmup", "0", "--seq-len", "16", "-q")
    expect_refusal(
        result,
        case="compressor.json that records no hash for model.onnx",
        code=1,
        problem="records no hash for model.onnx",
        fix="re-export the artifact",
    )


def test_manifest_not_json(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "garbled-manifest")
    (damaged / "compressor.json").write_text('{"schema": 1, "kind": ', encoding="utf-8")
    result = cli("benchmark", damaged, "--runs", "1", "--warmup", "0", "--seq-len", "16", "-q")
    expect_refusal(
        result, case="compressor.json that is not JSON", code=1, problem="is not valid JSON", fix="re-export it"
    )


def test_manifest_of_another_kind(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "other-kind")
    (damaged / "compressor.json").write_text(json.dumps({"kind": "something-else", "schema": 1}), encoding="utf-8")
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="compressor.json of another tool",
        code=1,
        problem="is not a compressor manifest",
        fix="re-export the artifact",
    )


def test_model_bytes_tampered(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "flipped")
    data = bytearray((damaged / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (damaged / "model.onnx").write_bytes(bytes(data))
    result = cli("benchmark", damaged, "--runs", "1", "--warmup", "0", "--seq-len", "16", "-q")
    expect_refusal(
        result,
        case="model.onnx modified after export (one bit flipped)",
        code=1,
        problem="does not match the hash",
        fix="re-export it",
    )


def test_not_onnx(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "not-onnx")
    (damaged / "model.onnx").write_text("this is a text file, not a protobuf", encoding="utf-8")
    _reseal(damaged)
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="model.onnx that is not ONNX (manifest hash matches)",
        code=1,
        problem="is not an ONNX model",
        fix="re-export it",
    )


def test_not_onnx_without_verification(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "not-onnx")
    (damaged / "model.onnx").write_bytes(b"\x08\x07" + b"\x00" * 64)
    (damaged / "compressor.json").unlink()
    result = cli("benchmark", damaged, "--no-verify", "--runs", "1", "--warmup", "0", "--seq-len", "16", "-q")
    expect_refusal(
        result,
        case="benchmark --no-verify of a file that is not ONNX",
        code=1,
        problem=("is not an ONNX model", "is not a loadable ONNX model"),
        fix="re-export it",
    )


@pytest.mark.parametrize("location", ["../../../../etc/passwd", "/etc/passwd"], ids=["relative", "absolute"])
def test_external_data_outside_the_artifact(cli, clone, artifact: Path, location: str) -> None:
    damaged = clone(artifact, "escape")
    _external(damaged, location)
    result = cli("predict", damaged, "a great movie", "-q")
    line = expect_refusal(
        result,
        case=f"ONNX external data pointing outside the artifact ({location})",
        code=1,
        problem="outside its directory",
        fix="refusing to load it",
    )
    assert location in line


def test_external_data_missing(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "external")
    _external(damaged, "weights.bin")
    (damaged / "weights.bin").unlink()
    _reseal(damaged)
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result, case="ONNX external data file missing", code=1, problem="which is missing", fix="re-export it"
    )


def test_external_data_tampered(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "external")
    _external(damaged, "weights.bin")
    data = bytearray((damaged / "weights.bin").read_bytes())
    data[0] ^= 0xFF
    (damaged / "weights.bin").write_bytes(bytes(data))
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="ONNX external data modified after export",
        code=1,
        problem="weights.bin` does not match the hash",
        fix="re-export it",
    )


def test_tokenizer_missing_from_artifact(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "no-tokenizer")
    (damaged / "tokenizer.json").unlink()
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result, case="artifact without tokenizer.json", code=1, problem="has no tokenizer.json", fix="re-export it"
    )


def test_inspect_reports_damage(cli, clone, artifact: Path) -> None:
    """`inspect` is the diagnostic: it describes a damaged artifact (exit 0) and names the damage."""
    damaged = clone(artifact, "escape")
    _external(damaged, "../../secrets.bin")
    result = cli("inspect", damaged, "--json")
    info = json.loads(result.out)
    expect_success(
        result,
        case="`inspect` of an artifact whose external data escapes its directory",
        note=f"exit 0; integrity: {info['integrity']}",
    )
    assert "outside its directory" in info["integrity"]


def test_inspect_intact_artifact_is_ok(cli, artifact: Path) -> None:
    result = cli("inspect", artifact, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["integrity"] == "ok"


def test_merge_run_missing(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("merge", tmp_path / "run", "--out", out, "-q")
    expect_refusal(
        result,
        case="merge: run directory does not exist",
        code=1,
        problem="not found",
        fix="pass the --out of `compressor finetune`",
        out=out,
    )


def test_merge_not_a_run(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("merge", ckpt, "--out", out, "-q")
    expect_refusal(
        result,
        case="merge: a checkpoint instead of a fine-tuning run",
        code=1,
        problem="has no adapter.safetensors",
        fix="pass the --out directory of `compressor finetune`",
        out=out,
    )


def test_merge_truncated_adapter(cli, clone, tmp_path: Path, run_dir: Path) -> None:
    run = clone(run_dir, "run")
    adapter = run / "adapter.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:64])
    out = tmp_path / "out"
    result = cli("merge", run, "--out", out, "-q")
    expect_refusal(
        result,
        case="merge: adapter file truncated",
        code=1,
        problem="is not a readable safetensors file",
        fix="rerun `compressor finetune`",
        out=out,
    )


def test_merge_method_config_from_the_future(cli, clone, tmp_path: Path, run_dir: Path) -> None:
    run = clone(run_dir, "run")
    method = json.loads((run / "method.json").read_text(encoding="utf-8"))
    (run / "method.json").write_text(json.dumps(method | {"version": 99}), encoding="utf-8")
    out = tmp_path / "out"
    result = cli("merge", run, "--out", out, "-q")
    expect_refusal(
        result,
        case="merge: method.json written by a newer compressor",
        code=2,
        problem="config version 99 is newer",
        fix="upgrade compressor",
        out=out,
    )
