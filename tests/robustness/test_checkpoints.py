"""Bad checkpoints given as MODEL: missing, incomplete, corrupt, pickled. Each is refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

from tests.robustness.harness import expect_refusal

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def test_model_path_missing(cli, tmp_path: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", tmp_path / "no-such-model", "--data", train_tsv, "--out", out, "-q")
    expect_refusal(
        result,
        case="model path does not exist",
        code=1,
        problem="not found",
        fix="pass a local checkpoint directory or `minilm`",
        out=out,
    )


def test_a_hub_id_not_in_the_cache_while_offline(cli, tmp_path: Path, train_tsv: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    result = cli("finetune", "acme/not-cached", "--data", train_tsv, "--out", out, "-q")
    expect_refusal(
        result,
        case="a hub id that is not in the local Hugging Face cache, offline",
        code=1,
        problem="is not a local directory and not in the Hugging Face cache",
        fix="rerun with HF_HUB_OFFLINE=0 to download it",
        out=out,
    )


def test_model_path_is_a_file(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("prune", ckpt / "model.safetensors", "--heads", "0.25", "--out", out, "-q")
    expect_refusal(
        result,
        case="model path is a file, not a directory",
        code=1,
        problem="is a file",
        fix="pass the checkpoint directory",
        out=out,
    )


def test_model_dir_without_config(cli, clone, tmp_path: Path, ckpt: Path) -> None:
    model = clone(ckpt, "no-config")
    (model / "config.json").unlink()
    out = tmp_path / "out"
    result = cli("export", model, "--out", out, "-q")
    expect_refusal(
        result,
        case="checkpoint directory without config.json",
        code=1,
        problem="has no config.json",
        fix="pass a checkpoint directory written by save_pretrained",
        out=out,
    )


def test_corrupt_config(cli, clone, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    model = clone(ckpt, "bad-config")
    (model / "config.json").write_text('{"model_type": "bert", "hidden_size": ', encoding="utf-8")
    out = tmp_path / "out"
    result = cli("analyse", model, "--data", train_tsv, "--out", out, "-q")
    expect_refusal(
        result,
        case="corrupt config.json (not JSON)",
        code=1,
        problem="is not valid JSON",
        fix="re-save the checkpoint",
        out=out,
    )


def test_corrupt_config_in_inspect(cli, clone, ckpt: Path) -> None:
    model = clone(ckpt, "bad-config")
    (model / "config.json").write_bytes(b"\xff\xfe garbage")
    result = cli("inspect", model, "-q")
    expect_refusal(
        result,
        case="`inspect` of a checkpoint whose config.json is garbage",
        code=1,
        problem="is not valid JSON",
        fix="re-save the checkpoint",
    )


def test_unsupported_architecture(cli, clone, tmp_path: Path, ckpt: Path) -> None:
    model = clone(ckpt, "gpt2")
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    (model / "config.json").write_text(json.dumps(config | {"model_type": "gpt2"}), encoding="utf-8")
    out = tmp_path / "out"
    result = cli("prune", model, "--heads", "0.25", "--out", out, "-q")
    expect_refusal(
        result,
        case="checkpoint of an unsupported architecture",
        code=1,
        problem="is not supported",
        fix="supported: bert",
        out=out,
    )


def test_truncated_weights(cli, clone, tmp_path: Path, ckpt: Path) -> None:
    model = clone(ckpt, "truncated")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out"
    result = cli("export", model, "--out", out, "-q")
    expect_refusal(
        result,
        case="weights file truncated (half a model.safetensors)",
        code=1,
        problem="may be truncated or corrupt",
        fix="re-save the checkpoint",
        out=out,
    )


def test_truncated_weights_of_a_pruned_checkpoint(cli, clone, tmp_path: Path, pruned_ckpt: Path) -> None:
    """Pruned checkpoints load through our own loader (shapes rebuilt first): same refusal."""
    model = clone(pruned_ckpt, "pruned-truncated")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    out = tmp_path / "out"
    result = cli("prune", model, "--heads", "0.25", "--out", out, "-q")
    expect_refusal(
        result,
        case="weights of a pruned checkpoint truncated",
        code=1,
        problem=("truncated", "not a readable safetensors"),
        fix=("re-save", "copy"),
        out=out,
    )


def test_pickle_checkpoint_refused(cli, clone, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    model = clone(ckpt, "pickled")
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    out = tmp_path / "out"
    result = cli("finetune", model, "--data", train_tsv, "--out", out, "-q")
    line = expect_refusal(
        result,
        case="only a pickle checkpoint (pytorch_model.bin)",
        code=1,
        problem="pickle checkpoint",
        fix="convert it to model.safetensors",
        out=out,
    )
    assert "never loads" in line


def test_no_weights(cli, clone, tmp_path: Path, ckpt: Path) -> None:
    model = clone(ckpt, "no-weights")
    (model / "model.safetensors").unlink()
    out = tmp_path / "out"
    result = cli("export", model, "--out", out, "-q")
    expect_refusal(
        result,
        case="checkpoint without weights",
        code=1,
        problem="has no model.safetensors",
        fix="save the checkpoint with safetensors",
        out=out,
    )


def test_tokenizer_missing(cli, clone, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    model = clone(ckpt, "no-tokenizer")
    for name in TOKENIZER_FILES:
        (model / name).unlink(missing_ok=True)
    out = tmp_path / "out"
    result = cli("finetune", model, "--data", train_tsv, "--out", out, "-q")
    expect_refusal(
        result,
        case="checkpoint without tokenizer files",
        code=1,
        problem="has no tokenizer files",
        fix="save the tokenizer with it",
        out=out,
    )
