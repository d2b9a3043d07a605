"""The CLI on regression artifacts and data: `predict` prints one score per line, `benchmark` reports Pearson,
Spearman and MSE, and scores given to a classifier stop with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporters.runtime import Runtime
from tests.artifacts import build_tiny_artifact
from tests.cli.test_predict import assert_one_line_error, run_cli
from tests.models import save_tiny_checkpoint
from tests.regression_data import POSITIVE_WORDS, save_tiny_encoder, write_regression_data

REGRESSION_HEAD = {
    "num_labels": 1,
    "id2label": {0: "LABEL_0"},
    "label2id": {"LABEL_0": 0},
    "problem_type": "regression",
}
TEXTS = ["a great lovely film", "an awful boring plot", ""]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("regression") / "artifact", seed=3, **REGRESSION_HEAD)


def test_predict_prints_one_score_per_line(artifact: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    code, out, _ = run_cli(["predict", str(artifact), *TEXTS, "--quiet"], monkeypatch, capsys)
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert all(set(r) == {"score"} for r in results) and len(results) == len(TEXTS)
    expected = Runtime(artifact).logits(TEXTS)[:, 0]  # the model's output itself: no softmax, no label
    assert [r["score"] for r in results] == pytest.approx(expected.tolist(), abs=1e-6)


def test_benchmark_reports_pearson_spearman_and_mse(artifact: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    data = write_regression_data(tmp_path / "val.tsv", 24)
    args = ["benchmark", str(artifact), "--data", str(data), "--runs", "2", "--warmup", "1", "--seq-len", "32"]
    code, out, err = run_cli([*args, "--quiet"], monkeypatch, capsys)
    assert code == 0, err
    header = next(line for line in out.splitlines() if "artifact" in line and "p50" in line)
    assert "pearson" in header and "spearman" in header and "mse" in header and "accuracy" not in header
    code, out, err = run_cli([*args, "--json", "-"], monkeypatch, capsys)
    assert code == 0, err
    report = json.loads(out)
    result = report["results"][0]
    assert report["task"] == "regression" and result["metric"] == "pearson" and result["accuracy"] is None
    assert set(result["regression"]) == {"pearson", "spearman", "mse"} and result["eval_rows"] == 24


def test_benchmark_refuses_a_classifier_beside_a_regression_model(
    artifact: Path,
    tmp_path: Path,
    monkeypatch,
    capsys,  # noqa: ANN001
) -> None:
    classifier = build_tiny_artifact(tmp_path / "classifier", seed=1)
    code, _, err = run_cli(["benchmark", str(artifact), str(classifier), "--seq-len", "32"], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "is a regression artifact but `classifier` is not")


def test_finetune_refuses_scores_for_a_classifier_checkpoint(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    model = save_tiny_checkpoint(tmp_path / "classifier", max_position_embeddings=160)
    data = write_regression_data(tmp_path / "train.tsv", 16)
    args = ["finetune", str(model), "--data", str(data), "--out", str(tmp_path / "out"), "--max-steps", "1"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert_one_line_error(code, err, 1, "has regression scores but the checkpoint")
    assert "classifies into 2 labels; start from a base encoder or a regression checkpoint (one output)" in err
    assert not (tmp_path / "out").exists()


def test_task_option_reads_whole_number_scores_as_regression(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    data = tmp_path / "ratings.tsv"
    rows = [(" ".join(POSITIVE_WORDS[: i % 5]) or "the film", i % 5) for i in range(20)]  # ratings 0..4: whole
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    encoder = save_tiny_encoder(tmp_path / "encoder")
    out = tmp_path / "out"
    args = ["finetune", str(encoder), "--data", str(data), "--out", str(out), "--task", "regression", "--quiet"]
    code, _, err = run_cli([*args, "--max-steps", "2", "--batch-size", "8"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((out / "labels.json").read_text()) == {"0": "LABEL_0"}  # one output, not five classes
    classifier = save_tiny_checkpoint(tmp_path / "classifier", max_position_embeddings=160)
    args = ["finetune", str(classifier), "--data", str(data), "--out", str(tmp_path / "x"), "--task", "regression"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "`task` is regression but the model is a trained classification model")


RECIPE = Path(__file__).parents[2] / "samples" / "recipes" / "regression.yaml"


@pytest.mark.slow
def test_run_regression_recipe_then_predict(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """`compressor run` of the sample regression recipe on a tiny encoder and tiny sentence-pair scores (a few
    steps each): fine-tune → merge → analyse → prune with distillation → int8 → benchmark; then `predict`."""
    from tests.compressor.stages.test_runner import tiny_overrides

    tiny = {
        "model": save_tiny_encoder(tmp_path / "encoder"),
        "train": write_regression_data(tmp_path / "train.tsv", 128, seed=0, pairs=True),
        "eval": write_regression_data(tmp_path / "val.tsv", 32, seed=1, pairs=True),
    }
    sets = [s for s in tiny_overrides(RECIPE, tiny) if s != "data.text_pair_column=null"]
    sets += ["data.max_train_samples=128", "finetune.train.max_steps=20", "finetune.train.lr=5e-3"]
    out = tmp_path / "run"
    args = ["run", str(RECIPE), "--out", str(out), "--quiet", *[x for s in sets for x in ("--set", s)]]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    artifact = out / "06-compressed-int8" / "artifact"
    manifest = json.loads((artifact / "compressor.json").read_text())
    assert manifest["task"] == "regression" and manifest["quantization"]["gate"]["measure"] == "r2 against fp32 scores"
    assert set(manifest["regression"]["final"]) == {"pearson", "spearman", "mse"}
    distilled = json.loads((out / "05-prune" / "DONE").read_text())["summary"]["recovery"]["distill"]
    assert distilled["steps"] == 2
    bench = json.loads((out / "07-benchmark" / "benchmark" / "benchmark.json").read_text())
    assert bench["task"] == "regression" and all(r["regression"] for r in bench["results"])
    pairs = ["a great film\ta great movie", "a dull plot\tan exciting story"]  # the model was trained on pairs
    code, printed, err = run_cli(["predict", str(artifact), *pairs, "--pairs", "-q"], monkeypatch, capsys)
    assert code == 0, err
    assert [set(json.loads(line)) for line in printed.splitlines()] == [{"score"}, {"score"}]
