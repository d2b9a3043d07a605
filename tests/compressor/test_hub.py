"""Hub ids resolve through the local Hugging Face cache (HF_HOME / HF_HUB_CACHE), offline by default; a hub id that
is not cached gives one clear error. The cache here is built by the test in huggingface_hub's layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from compressor.checkpoint import hub_cache_dir, is_hub_id, load_model, resolve_model_path
from compressor.errors import ModelError
from tests.models import encode, save_tiny_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_model(cache: Path, repo_id: str, checkpoint: Path) -> Path:
    """Put `checkpoint` into `cache` as huggingface_hub stores a downloaded snapshot of `repo_id`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(checkpoint, snapshot)
    return snapshot


@pytest.fixture()
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_a_cached_hub_id_loads_offline(tmp_path: Path, hf_home: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", seed=2)
    snapshot = cache_model(hf_home / "hub", "acme/tiny-bert", checkpoint)
    assert hub_cache_dir() == hf_home / "hub"
    assert resolve_model_path("acme/tiny-bert") == snapshot
    model, tokenizer = load_model("acme/tiny-bert")
    reference, _ = load_model(checkpoint)
    batch = encode(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reference(**batch).logits, atol=0, rtol=0)


def test_hub_cache_env_wins_over_hf_home(tmp_path: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub_cache_dir() == tmp_path / "elsewhere"


def test_an_uncached_hub_id_offline_is_one_clear_error(hf_home: Path) -> None:
    with pytest.raises(ModelError) as info:
        resolve_model_path("acme/not-cached")
    assert str(info.value) == (
        f"model `acme/not-cached` is not a local directory and not in the Hugging Face cache `{hf_home / 'hub'}`; "
        "pass a local checkpoint directory or `minilm`, or rerun with HF_HUB_OFFLINE=0 to download it"
    )


def test_what_reads_as_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    assert is_hub_id("acme/tiny-bert") and is_hub_id("bert-base-uncased")
    assert not is_hub_id("runs/mine")  # a local directory wins
    assert not is_hub_id("minilm") and not is_hub_id("../x") and not is_hub_id("/abs/path")
    assert not is_hub_id("a/b/c") and not is_hub_id("acme/..")


def test_cli_and_recipes_take_a_cached_hub_id(tmp_path: Path, hf_home: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    from compressor.stages.recipe import load_recipe
    from tests.cli.test_predict import run_cli

    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", seed=2)
    snapshot = cache_model(hf_home / "hub", "acme/tiny-bert", checkpoint)
    out = tmp_path / "pruned"
    code, _, err = run_cli(["prune", "acme/tiny-bert", "--heads", "0.5", "--out", str(out)], monkeypatch, capsys)
    assert code == 0, err
    assert (out / "model.safetensors").is_file()
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 2\nname: r\nmodel: minilm\nstages:\n  - export: {quantize: none}\n")
    assert load_recipe(recipe, overrides=["model=acme/tiny-bert"]).model == str(snapshot)
    recipe.write_text("version: 2\nname: r\nmodel: acme/tiny-bert\nstages:\n  - export: {quantize: none}\n")
    assert load_recipe(recipe).model == str(snapshot)
