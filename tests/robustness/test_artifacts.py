"""Untrusted artifacts and run directories: missing or tampered manifests and files, files that are not ONNX, graphs
that do not fit the labels, external data or symlinks that point outside the artifact. `predict` and `benchmark`
refuse them; `inspect` describes the damage."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto
from onnx.external_data_helper import convert_model_to_external_data

from exporters.manifest import write_manifest
from tests.exporters.test_runtime import INPUTS, edit_json, logits_graph, swap_graph
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


# --- every file the manifest lists is checked, and none may be read from outside the artifact -----------------


def test_labels_swapped_in_config(cli, clone, artifact: Path) -> None:
    """The tester's case: predict printed every label flipped (exit 0) and inspect said `integrity: ok`."""
    damaged = clone(artifact, "swapped-labels")
    edit_json(damaged / "config.json", id2label={"0": "positive", "1": "negative"})
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="config.json modified after export (id2label swapped)",
        code=1,
        problem="config.json` does not match the hash in compressor.json",
        fix="re-export it",
    )
    assert result.out == ""
    result = cli("inspect", damaged, "--json", "-q")
    info = json.loads(result.out)
    expect_success(
        result,
        case="`inspect` of an artifact whose config.json was modified",
        note=f"exit 0; integrity: {info['integrity']}",
    )
    assert "config.json` does not match the hash" in info["integrity"]


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "vocab.txt"])
def test_other_listed_file_modified(cli, clone, artifact: Path, name: str) -> None:
    damaged = clone(artifact, "modified")
    with open(damaged / name, "a", encoding="utf-8") as fh:
        fh.write("\n")
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case=f"{name} modified after export",
        code=1,
        problem=f"{name}` does not match the hash in compressor.json",
        fix="re-export it",
    )


def test_listed_file_missing(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "no-vocab")
    (damaged / "vocab.txt").unlink()
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="a file listed in compressor.json deleted (vocab.txt)",
        code=1,
        problem="has no vocab.txt (listed in compressor.json)",
        fix="re-export it",
    )


def test_file_added_after_export(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "added")
    text = (damaged / "tokenizer_config.json").read_text(encoding="utf-8")
    (damaged / "tokenizer_config.json").unlink()
    _reseal(damaged)
    (damaged / "tokenizer_config.json").write_text(text, encoding="utf-8")
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="tokenizer_config.json added after export (not in compressor.json)",
        code=1,
        problem="records no hash for tokenizer_config.json",
        fix="re-export the artifact",
    )


def test_tokenizer_of_another_model(cli, clone, artifact: Path) -> None:
    """The tester's case: an onnxruntime log line and an error blaming model.onnx. Resealed: the hash cannot tell."""
    damaged = clone(artifact, "other-tokenizer")
    tokenizer = json.loads((damaged / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["model"]["vocab"] |= {f"word{i}": 100 + i for i in range(50)}
    (damaged / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    _reseal(damaged)
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="tokenizer.json of another model (larger vocabulary; manifest resealed)",
        code=1,
        problem="tokenizer.json` produces token ids up to 149 but",
        fix="re-export the artifact",
    )


@pytest.mark.parametrize(
    ("id2label", "problem"),
    [
        ({"zero": "negative", "one": "positive"}, "label ids must be the integers 0..1"),
        ({"0": "negative", "2": "positive"}, "label ids must be the integers 0..1"),
        ({"0": 0, "1": 1}, "label names must be strings"),
    ],
    ids=["names-as-ids", "gap", "integer-names"],
)
def test_labels_malformed(cli, clone, artifact: Path, id2label: dict, problem: str) -> None:
    """The tester's case: non-integer id2label keys gave a traceback. Resealed: only the label check remains."""
    damaged = clone(artifact, "bad-labels")
    edit_json(damaged / "config.json", id2label=id2label)
    _reseal(damaged)
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result, case=f"config.json with id2label {json.dumps(id2label)}", code=1, problem=problem, fix="re-export"
    )


def test_model_symlinked_outside(cli, clone, artifact: Path, tmp_path: Path) -> None:
    """The tester's case: a model.onnx symlinked outside was accepted (symlinked external data was refused)."""
    damaged = clone(artifact, "linked-model")
    outside = tmp_path / "elsewhere.onnx"
    (damaged / "model.onnx").rename(outside)
    (damaged / "model.onnx").symlink_to(outside)
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="model.onnx a symlink to a file outside the artifact (same bytes)",
        code=1,
        problem="outside the artifact directory",
        fix="replace the link with the file itself or re-export the artifact",
    )


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json"])
def test_runtime_file_symlinked_outside(cli, clone, artifact: Path, tmp_path: Path, name: str) -> None:
    damaged = clone(artifact, "linked")
    (damaged / name).rename(tmp_path / name)
    (damaged / name).symlink_to(tmp_path / name)  # the same bytes: the hash alone would pass
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case=f"{name} a symlink to a file outside the artifact (same bytes)",
        code=1,
        problem="outside the artifact directory",
        fix="replace the link with the file itself or re-export the artifact",
    )


def test_manifest_symlinked_outside(cli, clone, artifact: Path, tmp_path: Path) -> None:
    damaged = clone(artifact, "linked-manifest")
    (damaged / "compressor.json").rename(tmp_path / "compressor.json")
    (damaged / "compressor.json").symlink_to(tmp_path / "compressor.json")
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="compressor.json a symlink outside the artifact",
        code=1,
        problem="outside the artifact directory",
        fix="replace the link with the file itself or re-export the artifact",
    )


def test_symlink_inside_the_artifact_is_fine(cli, clone, artifact: Path) -> None:
    linked = clone(artifact, "linked-inside")
    (linked / "vocab.txt").rename(linked / "vocab-real.txt")
    (linked / "vocab.txt").symlink_to("vocab-real.txt")
    _reseal(linked)
    result = cli("predict", linked, "a great movie", "-q")
    expect_success(result, case="a symlink to another file of the same artifact", note="exit 0; predictions printed")
    assert len(result.out.splitlines()) == 1


# --- a graph (resealed into the manifest) that does not fit the labels or the runtime's inputs --------------------


@pytest.mark.parametrize(
    ("graph", "case", "problem"),
    [
        (
            {"rank": 1},
            "model.onnx returning 1-D logits (batch,)",
            "returns logits of shape (batch,), expected (batch, 2) for the 2 labels in config.json",
        ),
        (
            {"width": 3},
            "model.onnx returning 3 logits for the 2 labels of config.json",
            "returns logits of shape (batch, 3), expected (batch, 2)",
        ),
        (
            {"width": 1},
            "model.onnx returning 1 logit for the 2 labels of config.json",
            "returns logits of shape (batch, 1), expected (batch, 2)",
        ),
        (
            {"inputs": ("input_ids", "token_type_ids")},
            "model.onnx without an attention_mask input",
            "has no attention_mask input (it takes input_ids, token_type_ids)",
        ),
        (
            {"inputs": (*INPUTS, "position_ids")},
            "model.onnx with an input the runtime does not feed (position_ids)",
            "expects input(s) position_ids; the runtime feeds only input_ids, attention_mask, token_type_ids",
        ),
        (
            {"input_type": TensorProto.INT32},
            "model.onnx taking int32 token ids",
            "expects input_ids as tensor(int32)",
        ),
    ],
    ids=["rank-1", "width-3", "width-1", "no-attention-mask", "extra-input", "int32-ids"],
)
def test_graph_does_not_fit(cli, clone, artifact: Path, graph: dict, case: str, problem: str) -> None:
    damaged = clone(artifact, "other-graph")
    swap_graph(damaged, logits_graph(**graph))
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(result, case=case + " (predict)", code=1, problem=problem, fix="re-export the artifact")


def test_graph_with_1d_logits_in_benchmark(cli, clone, artifact: Path, eval_tsv: Path) -> None:
    """The tester's case: benchmark printed `accuracy 50.00 %` (exit 0) for 1-D logits."""
    damaged = clone(artifact, "one-d")
    swap_graph(damaged, logits_graph(rank=1))
    result = cli("benchmark", damaged, "--data", eval_tsv, "--runs", "1", "--warmup", "0", "--seq-len", "16", "-q")
    expect_refusal(
        result,
        case="model.onnx returning 1-D logits (benchmark --data)",
        code=1,
        problem="expected (batch, 2) for the 2 labels in config.json",
        fix="re-export the artifact",
    )


@pytest.mark.parametrize(
    ("graph", "case"),
    [
        ({"width": 3, "declared": ["batch", 2]}, "model.onnx declaring 2 logits but returning 3"),
        ({"per_token": True}, "model.onnx whose logit width is symbolic (one per token)"),
    ],
    ids=["lying-shape", "symbolic-width"],
)
def test_graph_width_checked_on_first_output(cli, clone, artifact: Path, graph: dict, case: str) -> None:
    damaged = clone(artifact, "symbolic")
    swap_graph(damaged, logits_graph(**graph))
    result = cli("predict", damaged, "a great movie", "-q")
    line = expect_refusal(
        result,
        case=case,
        code=1,
        problem="for 1 text(s), expected (1, 2) for the 2 labels in config.json",
        fix="re-export the artifact",
    )
    assert "returned logits of shape (1, " in line


def test_graph_inputs_differ_from_manifest(cli, clone, artifact: Path) -> None:
    damaged = clone(artifact, "inputs")
    swap_graph(damaged, logits_graph(inputs=("input_ids", "attention_mask")))
    manifest = _manifest(damaged)
    manifest["inputs"] = list(INPUTS)
    (damaged / "compressor.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = cli("predict", damaged, "a great movie", "-q")
    expect_refusal(
        result,
        case="model.onnx whose inputs differ from the manifest's `inputs`",
        code=1,
        problem="takes inputs input_ids, attention_mask but compressor.json records input_ids, attention_mask, "
        "token_type_ids",
        fix="re-export the artifact",
    )


def test_stand_in_graph_that_fits_is_accepted(cli, clone, artifact: Path) -> None:
    """The stand-in graph itself is loadable: the refusals above come from the mismatch alone."""
    replaced = clone(artifact, "fits")
    swap_graph(replaced, logits_graph(inputs=("input_ids", "attention_mask")))
    result = cli("predict", replaced, "a great movie", "so bad", "-q")
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 2


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


def test_merge_onto_another_checkpoint_of_the_same_shape(cli, clone, tmp_path: Path, run_dir: Path) -> None:
    from tests.models import save_tiny_checkpoint

    run = clone(run_dir, "run")
    other = save_tiny_checkpoint(tmp_path / "other", seed=7)  # same shapes, other weights
    base = json.loads((run / "base.json").read_text(encoding="utf-8"))
    (run / "base.json").write_text(json.dumps(base | {"model": str(other)}), encoding="utf-8")
    out = tmp_path / "out"
    result = cli("merge", run, "--out", out, "-q")
    expect_refusal(
        result,
        case="merge: the run's base.json points at another checkpoint of the same shape",
        code=1,
        problem="is not the one",
        fix="pass --base with the original checkpoint",
        out=out,
    )
