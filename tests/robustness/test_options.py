"""Bad options: unknown names, out-of-range values, conflicting choices, a plan for another model. Exit code 2
(usage) for everything the command line or a config got wrong; 1 when a valid plan does not fit the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.robustness.harness import expect_refusal


def test_unknown_method(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", train_tsv, "--method", "qlora", "--out", out, "-q")
    line = expect_refusal(
        result, case="unknown fine-tuning method", code=2, problem="unknown method `qlora`", fix="known: ", out=out
    )
    assert "lora" in line.split("known:")[1]


def test_negative_rank(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", train_tsv, "--method", "lora", "-O", "rank=-1", "--out", out, "-q")
    expect_refusal(
        result, case="negative rank (-O rank=-1)", code=2, problem="`rank`", fix="must be a positive", out=out
    )


def test_unknown_method_option(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", train_tsv, "--method", "lora", "-O", "rnak=4", "--out", out, "-q")
    line = expect_refusal(
        result,
        case="misspelt method option (-O rnak=4)",
        code=2,
        problem="unknown key `rnak`",
        fix="allowed: ",
        out=out,
    )
    assert "rank" in line


def test_method_option_without_value(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", train_tsv, "--method", "lora", "-O", "rank", "--out", out, "-q")
    expect_refusal(
        result,
        case="method option without a value (-O rank)",
        code=2,
        problem="got 'rank'",
        fix="expected KEY=VALUE",
        out=out,
    )


def test_fraction_above_one(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("prune", ckpt, "--heads", "1.5", "--out", out, "-q")
    expect_refusal(
        result, case="fraction > 1 (--heads 1.5)", code=2, problem="got 1.5", fix="a fraction in [0, 1]", out=out
    )


def test_zero_epochs(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", train_tsv, "--epochs", "0", "--out", out, "-q")
    expect_refusal(
        result, case="zero epochs (--epochs 0)", code=2, problem="`epochs`", fix="must be positive", out=out
    )


def test_zero_batch_size(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", train_tsv, "--batch-size", "0", "--out", out, "-q")
    expect_refusal(
        result,
        case="zero batch size (--batch-size 0)",
        code=2,
        problem="batch-size",
        fix="must be a positive integer",
        out=out,
    )


def test_unparsable_number(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", train_tsv, "--epochs", "three", "--out", out)
    expect_refusal(
        result,
        case="a number option given a word (--epochs three)",
        code=2,
        problem="Invalid value for '--epochs'",
        fix="valid number",
        out=out,
    )
    assert "finetune --help' for help" in result.err


def test_unknown_option(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("prune", ckpt, "--head", "0.3", "--out", out)
    expect_refusal(
        result,
        case="misspelt option (--head)",
        code=2,
        problem="No such option: --head",
        fix="Possible options",
        out=out,
    )


def test_two_budgets(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("analyse", ckpt, "--data", train_tsv, "--budget", "params=0.5,flops=0.5", "--out", out, "-q")
    expect_refusal(
        result,
        case="two budgets at once (analyse)",
        code=2,
        problem="got 2 (params, flops)",
        fix="give exactly one of",
        out=out,
    )


def test_unknown_scorer(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("analyse", ckpt, "--data", train_tsv, "--scorer", "entropy", "--out", out, "-q")
    expect_refusal(
        result, case="unknown scorer (analyse)", code=2, problem="got 'entropy'", fix="must be one of", out=out
    )


def test_unknown_quantization(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("export", ckpt, "--quantize", "int4", "--out", out, "-q")
    expect_refusal(
        result,
        case="unknown quantization (--quantize int4)",
        code=2,
        problem="got 'int4'",
        fix="must be one of dynamic, static, none",
        out=out,
    )


def test_export_length_beyond_positions(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("export", ckpt, "--max-length", "512", "--seq-len", "32", "--out", out, "-q")
    expect_refusal(
        result,
        case="export --max-length beyond the model's positions",
        code=2,
        problem="exceeds the model's 64 positions",
        fix="pass --max-length 64 or less",
        out=out,
    )


def test_cuda_without_gpu(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", train_tsv, "--device", "cuda", "--out", out, "-q")
    expect_refusal(
        result,
        case="--device cuda on a machine without CUDA",
        code=2,
        problem="no CUDA device is available",
        fix="use --device cpu",
        out=out,
    )


def test_predict_zero_threads(cli, artifact: Path) -> None:
    result = cli("predict", artifact, "a great movie", "--threads", "0", "-q")
    expect_refusal(result, case="predict --threads 0", code=2, problem="`threads`", fix="must be a positive integer")
    assert result.out == ""


def test_benchmark_seq_len_beyond_positions(cli, artifact: Path) -> None:
    result = cli("benchmark", artifact, "--seq-len", "4096", "--runs", "1", "--warmup", "0", "-q")
    expect_refusal(
        result,
        case="benchmark --seq-len beyond the model's positions",
        code=2,
        problem="`seq_len`",
        fix="between 2 and the model's 64 positions",
    )


def _plan(num_layers: int) -> dict:
    """A valid plan (keep heads 0-1 and neurons 0-19 of every layer) for a tiny model with `num_layers` layers."""
    return {
        "kind": "compressor-plan",
        "version": 1,
        "scorer": "magnitude",
        "budget": {"spec": "params=0.6"},
        "model": {
            "model_type": "bert",
            "hidden_size": 32,
            "head_size": 8,
            "num_layers": num_layers,
            "heads": [4] * num_layers,
            "intermediate": [37] * num_layers,
        },
        "layers": [{"index": i, "source": i, "heads": [0, 1], "neurons": list(range(20))} for i in range(num_layers)],
    }


def test_plan_for_another_model_shape(cli, tmp_path: Path, ckpt: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_plan(3)), encoding="utf-8")
    out = tmp_path / "out"
    result = cli("prune", ckpt, "--plan", plan, "--out", out, "-q")
    line = expect_refusal(
        result,
        case="a plan made for a model of another shape (prune --plan)",
        code=1,
        problem="the plan is for a model with 3 layers",
        fix="run `compressor analyse` on this model",
        out=out,
    )
    assert "this model has 2 layers" in line


def test_plan_fits_when_shapes_match(cli, tmp_path: Path, ckpt: Path) -> None:
    """Control for the case above: the same plan for the right shape is applied."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_plan(2)), encoding="utf-8")
    out = tmp_path / "out"
    result = cli("prune", ckpt, "--plan", plan, "--out", out, "-q", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["structure"] == [[0, 2, 20], [1, 2, 20]]


def test_plan_not_json(cli, tmp_path: Path, ckpt: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text("{", encoding="utf-8")
    out = tmp_path / "out"
    result = cli("prune", ckpt, "--plan", plan, "--out", out, "-q")
    expect_refusal(
        result, case="plan.json that is not JSON", code=2, problem="is not valid JSON", fix="regenerate it", out=out
    )


def test_plan_with_fractions(cli, tmp_path: Path, ckpt: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_plan(2)), encoding="utf-8")
    out = tmp_path / "out"
    result = cli("prune", ckpt, "--plan", plan, "--heads", "0.5", "--out", out, "-q")
    expect_refusal(
        result,
        case="--plan together with --heads",
        code=2,
        problem="not both",
        fix="give either `plan` or the `heads`/`ffn` fractions",
        out=out,
    )


def test_recipe_missing(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("run", tmp_path / "recipe.yaml", "--out", out, "-q")
    expect_refusal(
        result,
        case="recipe file does not exist (run)",
        code=2,
        problem="not found",
        fix="pass a recipe YAML file",
        out=out,
    )


def test_recipe_not_yaml(cli, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages: [\n", encoding="utf-8")
    out = tmp_path / "out"
    result = cli("run", recipe, "--out", out, "-q")
    expect_refusal(
        result, case="recipe that is not valid YAML", code=2, problem="not valid YAML", fix="(line 2", out=out
    )


def test_unknown_vocab_fallback(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli(
        "prune", ckpt, "--heads", "0.5", "--vocab", train_tsv, "--vocab-fallback", "closest", "--out", out, "-q"
    )
    expect_refusal(
        result,
        case="unknown vocabulary fallback (prune --vocab-fallback closest)",
        code=2,
        problem="`vocab_fallback` must be one of unk, nearest",
        fix="got 'closest'",
        out=out,
    )


def test_zero_gate_batch(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("export", ckpt, "--eval-batch", "0", "--out", out, "-q")
    expect_refusal(
        result, case="zero sentences per gate run (export --eval-batch 0)", code=2, problem="`eval_batch`",
        fix="must be a positive integer", out=out,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "case", "problem", "fix"),
    [
        (
            ["--augment", "-1"],
            "negative augmentation (prune --augment -1)",
            "`augment` must be a number of copies",
            "got -1",
        ),
        (
            ["--vocab-fallback", "sparse", "--vocab-codes", "0"],
            "no codes for the sparse vocabulary (prune --vocab-codes 0)",
            "`vocab_codes` must be an integer between 1 and 64",
            "got 0",
        ),
        (
            ["--precision", "fp16"],
            "distillation arithmetic that is not offered (prune --precision fp16)",
            "`precision` must be one of fp32, bf16, auto",
            "got 'fp16'",
        ),
        (
            ["--layerwise-schedule", "cosine"],
            "unknown layer-wise schedule (prune --layerwise-schedule cosine)",
            "`layerwise_schedule` must be one of constant, linear",
            "got 'cosine'",
        ),
        (
            ["--layer-map", "nearest"],
            "unknown layer map (prune --layer-map nearest)",
            "`layer_map` must be one of uniform, source",
            "got 'nearest'",
        ),
        (
            ["--dropout", "1"],
            "a student dropout that drops everything (prune --dropout 1)",
            "`dropout` must be a share in [0, 1)",
            "got 1.0",
        ),
    ],
)
def test_bad_augmentation_and_vocabulary_codes(
    cli, tmp_path: Path, ckpt: Path, train_tsv: Path, args: list[str], case: str, problem: str, fix: str
) -> None:
    out = tmp_path / "out"
    result = cli("prune", ckpt, "--heads", "0.5", "--vocab", train_tsv, *args, "--out", out, "-q")
    expect_refusal(result, case=case, code=2, problem=problem, fix=fix, out=out)


def test_embedding_bits_other_than_8_or_4(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("export", ckpt, "--embedding-bits", "2", "--out", out, "-q")
    expect_refusal(
        result,
        case="int2 embeddings (export --embedding-bits 2)",
        code=2,
        problem="`embedding_bits` must be 8 or 4",
        fix="got 2",
        out=out,
    )


def test_an_unknown_int4_decode(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("export", ckpt, "--embedding-bits", "4", "--embedding-decode", "never", "--out", out, "-q")
    expect_refusal(
        result,
        case="int4 table decoded neither at load nor per lookup (export --embedding-decode never)",
        code=2,
        problem="`embedding_decode` must be one of lookup, load",
        fix="got 'never'",
        out=out,
    )


def test_latency_reference_that_is_not_a_row(cli, artifact: Path) -> None:
    result = cli("compare", artifact, "--latency-reference", "dense", "--runs", "1", "--warmup", "0")
    expect_refusal(
        result,
        case="latency reference that is not a row (compare --latency-reference dense)",
        code=2,
        problem="the latency reference `dense` is not a row",
        fix="name one of",
    )
