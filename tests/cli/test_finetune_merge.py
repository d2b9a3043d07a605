"""`compressor finetune` then `compressor merge` (options made from TrainConfig, the DataSpec and MergeConfig)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from compressor.checkpoint import load_model
from compressor.stages.finetune import load_adapter_dir
from tests.cli.test_predict import assert_one_line_error, run_cli
from tests.models import encode, save_tiny_checkpoint, write_tiny_data


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune-cli")
    return {
        "base": save_tiny_checkpoint(root / "base"),
        "train": write_tiny_data(root / "train.tsv", 24),
        "eval": write_tiny_data(root / "val.tsv", 8),
    }


def test_finetune_then_merge(files: dict[str, Path], tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    args = ["finetune", str(files["base"]), "-d", str(files["train"]), "--eval-data", str(files["eval"])]
    args += ["-m", "lora", "-O", "rank=2", "--max-steps", "2", "--batch-size", "8", "--out", str(run), "--json"]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["out"] == str(run) and summary["method"] == "lora" and summary["metrics"]["steps"] == 2
    assert json.loads((run / "method.json").read_text())["fields"]["rank"] == 2
    assert json.loads((run / "train.json").read_text())["fields"]["max_steps"] == 2

    code, out, err = run_cli(["inspect", str(run)], monkeypatch, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"fine-tuning output {run}: method lora on {files['base'].resolve()}"
    size = (run / "adapter.safetensors").stat().st_size
    share = 100 * size / (4 * summary["metrics"]["total_parameters"])
    assert lines[-1] == f"stored: adapter.safetensors, {size:,} bytes = {share:.3f} % of the model's " + (
        f"{4 * summary['metrics']['total_parameters']:,} (fp32: parameters × 4 bytes)"
    )

    merged = tmp_path / "merged"
    code, out, err = run_cli(["merge", str(run), "--out", str(merged)], monkeypatch, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("merge: merged lora adapter (max |Δlogit| ")
    assert lines[1] == f"wrote {merged}"
    trained, tokenizer, _ = load_adapter_dir(run)
    loaded, _ = load_model(merged)
    batch = encode(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, trained(**batch).logits, atol=1e-4, rtol=1e-4)

    # the base moved: --base finds it (same weights); another checkpoint is refused
    moved = Path(shutil.copytree(files["base"], tmp_path / "moved"))
    code, out, err = run_cli(
        ["merge", str(run), "--base", str(moved), "--out", str(tmp_path / "m2"), "--json"], monkeypatch, capsys
    )
    assert code == 0, err
    assert json.loads(out)["max_abs_diff"] <= 1e-4
    other = save_tiny_checkpoint(tmp_path / "other", seed=3)
    code, _, err = run_cli(
        ["merge", str(run), "--base", str(other), "--out", str(tmp_path / "m3")], monkeypatch, capsys
    )
    assert_one_line_error(code, err, 1, f"the base checkpoint `{other}` is not the one `{run}` was trained on")
    assert "pass --base with the original checkpoint" in err and not (tmp_path / "m3").exists()

    # --out must not hold what the command reads
    code, _, err = run_cli(["merge", str(run), "--out", str(tmp_path), "--force"], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, f"--out `{tmp_path}` contains the input `{run}`")
    assert (run / "adapter.safetensors").is_file() and (merged / "model.safetensors").is_file()


def test_finetune_needs_data(files: dict[str, Path], tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    code, _, err = run_cli(["finetune", str(files["base"]), "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert_one_line_error(code, err, 2, "Missing option '--data' / '-d'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("command", "groups"),
    [
        ("finetune", ["compressor.train.config:TrainConfig"]),
        ("merge", ["compressor.stages.merge:MergeConfig"]),
        ("prune", ["compressor.prune.config:PruneConfig"]),
        ("export", ["exporters.onnx.config:ExportConfig"]),
        ("analyse", ["compressor.sensitivity.config:AnalyseConfig"]),
        ("benchmark", ["exporters.measure:BenchmarkConfig"]),
    ],
)
def test_every_config_field_is_an_option(command: str, groups: list[str]) -> None:
    """The options are generated from the config dataclasses: each field is a flag named after it."""
    import importlib

    help_text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
    for group in groups:
        module, name = group.split(":")
        for f in dataclasses.fields(getattr(importlib.import_module(module), name)):
            if not f.init or not f.metadata.get("cli", True):
                continue
            flag = f.metadata.get("flag", "--" + f.name.replace("_", "-")).split("/")[0]
            assert flag in help_text, f"{command}: no {flag} for {name}.{f.name}"


def test_adamix_adapter_experts_from_the_command_line(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch,  # noqa: ANN001
    capsys,  # noqa: ANN001
) -> None:
    """`-O experts=adapter`: the run trains bottleneck-adapter experts; merge keeps one averaged adapter per layer,
    which the merged checkpoint rebuilds on load (same logits as the trained model), and prune keeps it."""
    run, merged, pruned = tmp_path / "run", tmp_path / "merged", tmp_path / "pruned"
    args = ["finetune", str(files["base"]), "-d", str(files["train"]), "-m", "adamix", "-O", "experts=adapter"]
    args += ["-O", "bottleneck=4", "-O", "num_experts=2", "--max-steps", "2", "--batch-size", "8", "--out", str(run)]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    fields = json.loads((run / "method.json").read_text())["fields"]
    assert (fields["experts"], fields["num_experts"], fields["bottleneck"]) == ("adapter", 2, 4)
    code, _, err = run_cli(["merge", str(run), "--out", str(merged)], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((merged / "config.json").read_text())["compressor_adapter"]["layers"] == [0, 1]
    trained, tokenizer, _ = load_adapter_dir(run)
    batch = encode(tokenizer)
    loaded, _ = load_model(merged)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, trained(**batch).logits, atol=1e-4, rtol=1e-4)
    code, _, err = run_cli(
        ["prune", str(merged), "--heads", "0.5", "--ffn", "0.5", "--out", str(pruned)], monkeypatch, capsys
    )
    assert code == 0, err
    assert json.loads((pruned / "config.json").read_text())["compressor_adapter"]["layers"] == [0, 1]
    load_model(pruned)
    code, out, err = run_cli(["inspect", str(pruned)], monkeypatch, capsys)
    assert code == 0, err
    assert "kept adapters: bottleneck 4, gelu, after the FFN output of layers 0, 1" in out


def test_adamix_expert_count_under_the_form_option_is_a_usage_error(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch,  # noqa: ANN001
    capsys,  # noqa: ANN001
) -> None:
    args = ["finetune", str(files["base"]), "-d", str(files["train"]), "-m", "adamix", "-O", "experts=4"]
    code, _, err = run_cli([*args, "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert_one_line_error(
        code, err, 2, "`experts` must be one of lora, adapter (the number of experts is `num_experts`)"
    )
