"""Regression (one output, a float score per text, `problem_type: regression`) end to end: how the task is
recognised, its metrics, and every stage on a tiny encoder and a synthetic STS-B-like file with text pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from compressor.data import check_matches_model, load_data
from compressor.errors import ConfigError, DataError
from compressor.stages import STAGES as STAGE_REGISTRY
from compressor.stages.context import DataFiles, DataSpec, model_task
from compressor.task import REGRESSION, config_task, fidelity, regression_metrics
from tests.models import write_tiny_data
from tests.regression_data import save_tiny_encoder, write_regression_data

FAST_EXPORT = {"fuse": "off", "eval_samples": 16, "timing_runs": 2, "threads": 1}
STAGES = [
    {"finetune": {"method": "full", "train": {"max_steps": 40, "batch_size": 32, "lr": 5e-3, "warmup_ratio": 0.0}}},
    {"merge": {}},
    {"analyse": {"scorer": "fisher", "budget": "params=0.6", "samples": 32}},
    {"export": {"name": "dense-fp32", "quantize": "none", **FAST_EXPORT}},
    {
        "prune": {
            "plan": "analyse",
            "recover": "reconstruct+distill",
            "recover_steps": 4,
            "batch_size": 8,
            "samples": 32,
        }
    },
    {"export": {"name": "compressed-int8", "quantize": "dynamic", **FAST_EXPORT}},
    {"benchmark": {"runs": 3, "warmup": 1, "threads": 1}},
]


def test_float_labels_that_are_not_whole_numbers_are_regression(tmp_path: Path) -> None:
    data = load_data(write_regression_data(tmp_path / "train.tsv", 16))
    assert data.is_regression and data.task == REGRESSION
    assert data.id2label == {0: "LABEL_0"} and data.num_labels == 1
    assert all(isinstance(y, float) for y in data.labels) and any(not y.is_integer() for y in data.labels)
    assert data.sample(4, seed=0).is_regression and data.head(3).is_regression  # subsets keep the task
    assert data.to_dataset().features["label"].dtype == "float32"
    whole = load_data(write_tiny_data(tmp_path / "sst.tsv", 8))  # 0/1: classes, unless told otherwise
    assert not whole.is_regression and whole.labels == [1, 0] * 4
    scores = load_data(tmp_path / "sst.tsv", task="regression")
    assert scores.is_regression and scores.labels == [1.0, 0.0] * 4


def test_regression_labels_must_be_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("sentence\tlabel\na good film\t3.5\na bad film\tlow\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"has `low` in row 2 \(line 3\), not a number") as err:
        load_data(path, task="regression")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="`task` must be one of auto, classification, regression"):
        load_data(path, task="ranking")


def test_scores_given_to_a_classifier_are_refused_in_one_line(tmp_path: Path) -> None:
    path = write_regression_data(tmp_path / "train.tsv", 8)
    with pytest.raises(DataError, match="holds scores .* regression data, but the model classifies into 2 labels"):
        load_data(path, id2label={0: "negative", 1: "positive"})
    scores = load_data(path)
    with pytest.raises(DataError, match="has regression scores but the checkpoint `ckpt` classifies into 2 labels"):
        check_matches_model(scores, 2, "ckpt")
    classes = load_data(write_tiny_data(tmp_path / "sst.tsv", 8))
    with pytest.raises(DataError, match="is a regression model"):
        check_matches_model(classes, 1, "ckpt")
    files = DataFiles(DataSpec(train=str(path), task="regression"))
    with pytest.raises(ConfigError, match="`task` is regression but the model is a trained classification model"):
        files.train(task="classification")


def test_a_checkpoints_task_comes_from_its_config() -> None:
    head = {"architectures": ["BertForSequenceClassification"]}
    assert model_task(head | {"num_labels": 1}) == REGRESSION
    assert model_task(head | {"problem_type": "regression", "id2label": {"0": "LABEL_0"}}) == REGRESSION
    assert model_task(head | {"id2label": {"0": "neg", "1": "pos"}}) == "classification"
    assert model_task({"architectures": ["BertModel"]}) is None  # a base encoder: the data decides
    assert config_task({"id2label": {"0": "LABEL_0"}}) == REGRESSION


def test_regression_metrics_match_their_definitions() -> None:
    rng = np.random.default_rng(0)
    gold = rng.normal(size=50)
    pred = gold + rng.normal(scale=0.5, size=50)
    m = regression_metrics(pred[:, None], gold.tolist())
    assert m["pearson"] == pytest.approx(np.corrcoef(pred, gold)[0, 1])
    assert m["mse"] == pytest.approx(np.mean((pred - gold) ** 2))
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731 - no ties here
    assert m["spearman"] == pytest.approx(np.corrcoef(ranks(pred), ranks(gold))[0, 1])
    monotone = regression_metrics(np.exp(gold), gold.tolist())  # a monotone, non-linear map: rank-perfect
    assert monotone["spearman"] == pytest.approx(1.0) and monotone["pearson"] < 0.99
    ties = regression_metrics([1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.0, 3.0])
    assert 0 < ties["spearman"] < 1
    assert regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["pearson"] == 0.0  # a constant predicts nothing


def test_the_int8_gate_measures_r2_against_fp32_scores() -> None:
    from exporters.onnx.validate import agreement

    ref = np.linspace(0, 5, 40, dtype=np.float32)[:, None]  # (rows, 1): a regression head
    assert agreement(ref, ref) == 1.0
    shifted = agreement(ref, ref + 0.5)  # Pearson would call this perfect; the gate does not
    assert shifted == pytest.approx(1 - 40 * 0.25 / float(np.sum((ref - ref.mean()) ** 2)))
    assert agreement(ref, np.full_like(ref, 2.5)) == pytest.approx(0.0)  # a constant explains none of the variance
    assert fidelity(ref, ref * np.nan) == 0.0
    classes = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert agreement(classes, classes[::-1]) == 0.0  # classification: same arg-max, as before


def test_distillation_of_a_regression_head_is_mse() -> None:
    from compressor.train.distill import logit_loss

    teacher = torch.tensor([[1.0], [3.0]])
    student = torch.tensor([[1.5], [2.0]], requires_grad=True)
    loss = logit_loss(student, teacher, temperature=2.0)
    assert float(loss.detach()) == pytest.approx((0.25 + 1.0) / 2)  # no temperature: one output has no softmax
    loss.backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    assert float(logit_loss(teacher, teacher, 2.0)) == 0.0


def test_scoring_batches_keep_float_scores(tmp_path: Path) -> None:
    from compressor.sensitivity.masks import make_batches
    from tests.models import tiny_tokenizer

    data = load_data(write_regression_data(tmp_path / "train.tsv", 12))
    batches = make_batches(tiny_tokenizer(tmp_path / "tok"), data, samples=12, seq_len=32, batch_size=12, num_labels=1)
    labels = batches[0]["labels"]
    assert labels.dtype == torch.float32 and sorted(labels.tolist()) == pytest.approx(sorted(data.labels))
    with pytest.raises(DataError, match="has regression scores but the model classifies into 2 labels"):
        make_batches(tiny_tokenizer(tmp_path / "tok"), data, samples=4, seq_len=32, batch_size=4, num_labels=2)


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Every stage on a tiny base encoder and sentence-pair scores: fine-tune → merge → analyse → dense fp32 →
    prune (plan, reconstruction + distillation) → int8 → benchmark."""
    from compressor.stages.runner import run_pipeline

    root = tmp_path_factory.mktemp("regression")
    recipe = {
        "version": 2,
        "name": "tiny-regression",
        "model": str(save_tiny_encoder(root / "encoder")),
        "data": {
            "train": str(write_regression_data(root / "train.tsv", 256, seed=0, pairs=True)),
            "eval": str(write_regression_data(root / "val.tsv", 48, seed=1, pairs=True)),
            "text_pair_column": "sentence2",
        },
        "stages": STAGES,
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return run_pipeline(path, root / "run", quiet=True)


def test_finetune_learns_a_regression_head(regression_run) -> None:  # noqa: ANN001
    summary = regression_run.stage("finetune").summary
    assert summary["accuracy"] is None and summary["metric"] == "pearson"
    assert set(summary["regression"]) == {"pearson", "spearman", "mse"}
    assert summary["score"] > 0.5  # the words decide the score: even 40 steps find the correlation
    labels = json.loads((regression_run.stage("finetune").out / "labels.json").read_text())
    assert labels == {"0": "LABEL_0"}
    merged = json.loads((regression_run.stage("merge").out / "config.json").read_text())
    assert merged["problem_type"] == "regression" and len(merged["id2label"]) == 1


def test_prune_distils_and_reports_regression_metrics(regression_run) -> None:  # noqa: ANN001
    summary = regression_run.stage("prune").summary
    assert summary["metric"] == "pearson" and summary["accuracy"] is None
    assert summary["recovery"]["distill"]["steps"] == 4 and summary["recovery"]["reconstruct"]["layers"]
    assert summary["encoder_params_after"] < summary["encoder_params_before"]
    config = json.loads((regression_run.stage("prune").out / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["compressor_structure"]


def test_export_gates_int8_on_r2_and_records_regression_metrics(regression_run) -> None:  # noqa: ANN001
    manifest = json.loads((regression_run.artifact / "compressor.json").read_text())
    assert manifest["task"] == REGRESSION and manifest["accuracy"] is None
    record = manifest["regression"]
    assert record["samples"] == 16 and set(record["fp32"]) == set(record["final"]) == {"pearson", "spearman", "mse"}
    gate = manifest["quantization"]["gate"]
    assert gate["measure"] == "r2 against fp32 scores" and gate["passed"] and gate["agreement"] >= 0.99
    summary = regression_run.stage("compressed-int8").summary
    assert summary["task"] == REGRESSION and summary["score"] == record["final"]["pearson"]
    assert "int8 scores R²" in STAGE_REGISTRY.get("export").describe(summary)


def test_benchmark_and_report_show_pearson_spearman_mse(regression_run) -> None:  # noqa: ANN001
    rows = regression_run.stage("benchmark").summary["rows"]
    assert [r["name"] for r in rows] == ["dense-fp32", "compressed-int8"]
    for row in rows:
        assert row["metric"] == "pearson" and row["accuracy"] is None and row["eval_rows"] == 48
        assert row["score"] == row["regression"]["pearson"] and row["regression"]["mse"] >= 0
    report = json.loads((regression_run.stage("benchmark").out / "benchmark.json").read_text())
    assert report["task"] == REGRESSION
    assert (regression_run.stage("benchmark").out / "accuracy_latency.png").is_file()
    md = regression_run.report_md.read_text()
    assert "pearson 0." in md and "| pearson | spearman | mse |" in md


def test_the_artifact_predicts_scores(regression_run) -> None:  # noqa: ANN001
    from exporters.runtime import Runtime

    runtime = Runtime(regression_run.artifact)
    assert runtime.task == REGRESSION and runtime.num_labels == 1
    texts = ["a great lovely film", "an awful boring dull film"]
    results = runtime.predict(texts)
    assert all(set(r) == {"score"} and isinstance(r["score"], float) for r in results)
    assert [r["score"] for r in results] == pytest.approx(runtime.logits(texts)[:, 0].tolist())
