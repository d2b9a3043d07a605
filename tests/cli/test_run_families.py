"""A tiny DistilBERT and a tiny RoBERTa checkpoint through `compressor run` with a sample recipe (fine-tune a few
steps → merge → prune → export int8 → benchmark), then `compressor predict` on the artifact (slow: ~1 min each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporters.runtime import Runtime
from tests.cli.test_predict import run_cli
from tests.compressor.stages.test_runner import tiny_overrides
from tests.families import FAMILIES, save_family_checkpoint
from tests.models import write_tiny_data

RECIPE = Path(__file__).parents[2] / "samples" / "recipes" / "lora.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["distilbert", "roberta"])
def test_a_family_checkpoint_runs_the_lora_recipe_then_predicts(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # 160 positions: the recipe's exports truncate at 128 tokens (RoBERTa's table holds 2 fewer than its size)
    labels = {"id2label": {0: "0", 1: "1"}, "label2id": {"0": 0, "1": 1}}
    tiny = {
        "model": save_family_checkpoint(family, tmp_path / "model", max_position_embeddings=160, **labels),
        "train": write_tiny_data(tmp_path / "train.tsv", 40),
        "eval": write_tiny_data(tmp_path / "val.tsv", 20),
    }
    out = tmp_path / "run"
    sets = [x for item in tiny_overrides(RECIPE, tiny) for x in ("--set", item)]
    code, _, err = run_cli(["run", str(RECIPE), "--out", str(out), *sets, "-q"], monkeypatch, capsys)
    assert code == 0, err
    artifact = next(out.glob("*-compressed-int8")) / "artifact"
    manifest = json.loads((artifact / "compressor.json").read_text())
    assert manifest["inputs"] == list(FAMILIES[family].inputs)  # no token_type_ids for either family
    assert manifest["quantization"]["mode"] == "dynamic"
    assert any(s["stage"] == "prune" for s in manifest["stages"])

    code, stdout, err = run_cli(["predict", str(artifact), "a great movie", "so terrible", "-q"], monkeypatch, capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [r["label"] for r in rows] == [
        r["label"] for r in Runtime(artifact).predict(["a great movie", "so terrible"])
    ]
