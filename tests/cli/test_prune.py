from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from compressor.arch.modules import RemappedEmbedding
from compressor.checkpoint import load_model
from compressor.errors import ConfigError
from tests.cli.test_predict import assert_one_line_error, run_cli
from tests.models import encode, save_tiny_checkpoint, write_tiny_data


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prune-cli")
    return {
        "ckpt": save_tiny_checkpoint(root / "ckpt", seed=1),
        "train": write_tiny_data(root / "train.tsv", 24),
        "val": write_tiny_data(root / "val.csv", 10, fmt="csv"),
    }


def test_prune_with_reconstruction_writes_a_loadable_checkpoint(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    args = [
        "prune",
        str(files["ckpt"]),
        "--heads",
        "0.5",
        "--ffn",
        "0.3",
        "--recover",
        "reconstruct",
        "--data",
        str(files["train"]),
        "--eval-data",
        str(files["val"]),
        "--samples",
        "16",
        "--out",
        str(out),
        "--json",
        "-q",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["structure"] == [[0, 2, 26], [1, 2, 26]]
    assert len(report["recovery"]["reconstruct"]["layers"]) == 2 and 0 <= report["accuracy"] <= 1
    assert report["out"] == str(out) and report["vocab"] is None
    model, tok = load_model(out)
    assert model.bert.encoder.layer[1].attention.self.query.weight.shape == (16, 32)
    assert model.config.compressor_structure["layers"][0]["intermediate"] == 26
    with torch.no_grad():
        assert model(**encode(tok)).logits.shape == (10, 2)


def test_prune_vocab_reports_sizes_and_unknown_share(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "vocab"
    result = CliRunner().invoke(
        app,
        [
            "prune",
            str(files["ckpt"]),
            "--vocab",
            str(files["train"]),
            "--eval-data",
            str(files["val"]),
            "--out",
            str(out),
            "--json",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    vocab = json.loads(result.stdout)["vocab"]
    assert vocab["kept"] < vocab["source_size"] and vocab["model_bytes_after"] < vocab["model_bytes_before"]
    assert vocab["validation_unknown_rate"] == 0.0  # validation sentences come from the same pool as training
    model, _ = load_model(out)
    assert isinstance(model.bert.embeddings.word_embeddings, RemappedEmbedding)


def test_prune_vocab_train_keeps_the_training_tokens(
    files: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:  # noqa: ANN001
    from compressor.data import load_data
    from compressor.prune.vocab import used_token_ids

    out = tmp_path / "vocab"
    args = ["prune", str(files["ckpt"]), "--heads", "0.25", "--vocab", "train", "--data", str(files["train"])]
    code, stdout, err = run_cli([*args, "--out", str(out), "--json", "-q"], monkeypatch, capsys)
    assert code == 0, err
    vocab = json.loads(stdout)["vocab"]
    model, tok = load_model(out)
    assert vocab["kept"] == len(used_token_ids(tok, load_data(files["train"]).texts)) < vocab["source_size"]
    assert isinstance(model.bert.embeddings.word_embeddings, RemappedEmbedding)

    code, _, err = run_cli(
        ["prune", str(files["ckpt"]), "--vocab", "train", "--out", str(tmp_path / "x")], monkeypatch, capsys
    )
    assert_one_line_error(code, err, 2, "recovery and `vocab: train` need training data: pass --data")
    assert not (tmp_path / "x").exists()
    missing = tmp_path / "missing.tsv"
    code, _, err = run_cli(
        ["prune", str(files["ckpt"]), "--vocab", str(missing), "--out", str(tmp_path / "x")], monkeypatch, capsys
    )
    assert_one_line_error(code, err, 1, f"data file `{missing}` not found")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [(["--heads", "1.5"], "`heads`"), (["--ffn", "-0.2"], "`ffn`"), (["--iterations", "0"], "`iterations`")],
)
def test_bad_values_are_one_line_usage_errors(
    files: dict[str, Path], tmp_path: Path, args: list[str], match: str, monkeypatch, capsys
) -> None:  # noqa: ANN001
    code, _, err = run_cli(["prune", str(files["ckpt"]), *args, "--out", str(tmp_path / "x")], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, match)
    assert not (tmp_path / "x").exists()
    result = CliRunner().invoke(app, ["prune", str(files["ckpt"]), *args, "--out", str(tmp_path / "x")])
    assert isinstance(result.exception, ConfigError)


def test_help_shows_an_example() -> None:
    result = CliRunner().invoke(app, ["prune", "--help"])
    assert result.exit_code == 0 and "Example: compressor prune" in result.output


def test_prune_heads_by_update_ranks_against_the_base(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch,
    capsys,  # noqa: ANN001
) -> None:
    """`--heads-by update --update-base BASE`: the heads whose q/v rows moved least from BASE go."""
    from compressor.checkpoint import save_model

    base, tokenizer = load_model(files["ckpt"])
    tuned, _ = load_model(files["ckpt"])
    with torch.no_grad():
        for layer, head in ((0, 2), (0, 3), (1, 0), (1, 3)):  # "fine-tuning" moved these heads' q/v rows
            attention = tuned.bert.encoder.layer[layer].attention.self
            attention.query.weight[8 * head : 8 * head + 8] += 0.05
            attention.value.weight[8 * head : 8 * head + 8] += 0.05
    save_model(tuned, tokenizer, tmp_path / "tuned")
    out = tmp_path / "pruned"
    args = ["prune", str(tmp_path / "tuned"), "--heads", "0.5", "--heads-by", "update"]
    code, _, err = run_cli([*args, "--update-base", str(files["ckpt"]), "--out", str(out)], monkeypatch, capsys)
    assert code == 0, err
    layers = json.loads((out / "config.json").read_text())["compressor_structure"]["layers"]
    assert [e["heads"] for e in layers] == [[2, 3], [0, 3]]
    code, _, err = run_cli([*args, "--update-base", "finetune", "--out", str(tmp_path / "x")], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "prune `update_base: finetune` needs a finetune stage before it")
    code, _, err = run_cli([*args, "--out", str(tmp_path / "y")], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "`heads_by: update` needs `heads`")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # DSEE's unstructured step from the CLI: in each kept q/v matrix the half fine-tuning moved least is zeroed
    with torch.no_grad():  # the first half of the input columns of every query moved further
        for layer in tuned.bert.encoder.layer:
            layer.attention.self.query.weight[:, :16] += 0.2
    save_model(tuned, tokenizer, tmp_path / "tuned2")
    args = ["prune", str(tmp_path / "tuned2"), "--heads", "0.5", "--heads-by", "update", "--update-base"]
    extra = [str(files["ckpt"]), "--unstructured", "0.5", "--unstructured-by", "update"]
    code, _, err = run_cli([*args, *extra, "--out", str(tmp_path / "z")], monkeypatch, capsys)
    assert code == 0, err
    pruned, _ = load_model(tmp_path / "z")
    for layer in pruned.bert.encoder.layer:
        query = layer.attention.self.query.weight  # (2 heads · 8, 32)
        assert (query[:, 16:] == 0).all() and not (query[:, :16] == 0).any()
        value = layer.attention.self.value.weight
        assert int((value == 0).sum()) == value.numel() // 2
