from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from compressor.errors import ConfigError
from compressor.pipeline import run_pipeline
from compressor.recipe import load_recipe
from compressor.report import SECTIONS, summarise_run
from compressor.rundir import DONE, STAGE_FILE, content_hash
from tests.models import save_tiny_checkpoint, write_tiny_data

SAMPLES = sorted((Path(__file__).parents[2] / "samples" / "recipes").glob("*.yaml"))
# The demo and the plan-driven recipe run by default; the other samples (same stages, other methods) with --run-slow.
FAST_SAMPLES = {"minilm-sst2-fast.yaml", "full.yaml"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny checkpoint (integer label names, like SST-2's files) and tiny train / validation files."""
    root = tmp_path_factory.mktemp("pipeline")
    model = save_tiny_checkpoint(
        root / "tiny", max_position_embeddings=160, id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1}
    )
    return {
        "model": model,
        "train": write_tiny_data(root / "train.tsv", 40),
        "eval": write_tiny_data(root / "val.tsv", 20),
    }


def recipe_file(tmp_path: Path, tiny: dict[str, Path], stages: list[dict]) -> Path:
    raw = {
        "name": "tiny",
        "model": str(tiny["model"]),
        "data": {"train": str(tiny["train"]), "eval": str(tiny["eval"])},
        "stages": stages,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


FINETUNE = {"finetune": {"method": "full", "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-3, "save_steps": 1}}}
LIGHT = [
    FINETUNE,
    {"merge": {}},
    {"prune": {"heads": 0.5, "ffn": 0.5}},
    {"export": {"quantize": "none", "fuse": "off", "eval_samples": 8, "timing_runs": 2}},
]


def statuses(result) -> dict[str, str]:  # noqa: ANN001
    return {s.dir.name: s.status for s in result.stages}


def test_run_writes_stage_dirs_and_a_full_report(tmp_path: Path, tiny: dict[str, Path]) -> None:
    stages = [
        FINETUNE,
        {"merge": {}},
        {"analyse": {"scorer": "head-gradient", "budget": "params=0.6", "samples": 16}},
        {"prune": {"plan": "analyse", "recover_steps": 2, "batch_size": 8}},
        {"export": {"quantize": "dynamic", "fuse": "off", "eval_samples": 8, "timing_runs": 2}},
        {"benchmark": {"runs": 3, "warmup": 1, "baselines": ["fp32", "int8"]}},
    ]
    out = tmp_path / "run"
    result = run_pipeline(recipe_file(tmp_path, tiny, stages), out, quiet=True)
    names = [
        "01-finetune",
        "02-merge",
        "03-analyse",
        "04-dense-fp32",
        "05-dense-int8",
        "06-prune",
        "07-export",
        "08-benchmark",
    ]
    assert list(statuses(result)) == names and set(statuses(result).values()) == {"ran"}
    for name in names:
        stage = json.loads((out / name / STAGE_FILE).read_text())
        done = json.loads((out / name / DONE).read_text())
        assert len(stage["config_hash"]) == 64 and stage["inputs"]
        assert done["output_hash"] == content_hash(result.stage(name[3:]).out)
    # the plan from analyse drove the pruning: the pruned model has the plan's widths
    plan = json.loads((out / "03-analyse" / "analysis" / "plan.json").read_text())
    pruned = json.loads((out / "06-prune" / "model" / "config.json").read_text())["compressor_structure"]
    assert [len(e["heads"]) for e in pruned["layers"]] == [len(e["heads"]) for e in plan["layers"] if not e["dropped"]]
    rows = result.stage("benchmark").summary["rows"]
    assert [r["name"] for r in rows] == ["dense fp32", "dense int8", "compressed int8"]
    assert all(r["eval_rows"] == 20 for r in rows)

    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for section in SECTIONS:
        assert f"## {section}\n" in md and f"<h2>{section}</h2>" in page
    assert md.count("![") == 2  # heatmap and accuracy-vs-latency plot, linked
    assert page.count('src="data:image/png;base64,') == 2 and 'src="http' not in page  # self-contained
    assert "heads before" in md and "dense int8" in md and "CPU flags" in md and "onnxruntime" in md
    summary = summarise_run(out)
    assert "08-benchmark" in summary and "compressed int8" in summary and "unfinished" not in summary


def test_resume_skips_done_stages_and_reruns_from_a_changed_one(tmp_path: Path, tiny: dict[str, Path]) -> None:
    path, out = recipe_file(tmp_path, tiny, LIGHT), tmp_path / "run"
    first = run_pipeline(path, out, quiet=True)
    assert set(statuses(first).values()) == {"ran"}
    marks = {p.parent.name: p.stat().st_mtime_ns for p in out.glob(f"*/{DONE}")}

    again = run_pipeline(path, out, resume=True, quiet=True)
    assert set(statuses(again).values()) == {"skipped"}
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob(f"*/{DONE}")} == marks

    changed = run_pipeline(path, out, resume=True, overrides=["prune.heads=0.25"], quiet=True)
    assert statuses(changed) == {
        "01-finetune": "skipped",
        "02-merge": "skipped",
        "03-prune": "ran",
        "04-export": "ran",
    }
    structure = json.loads((out / "03-prune" / "model" / "config.json").read_text())["compressor_structure"]
    assert [len(e["heads"]) for e in structure["layers"]] == [3, 3]

    with pytest.raises(ConfigError, match="pass --resume to continue that run, --force to replace it"):
        run_pipeline(path, out, quiet=True)


def test_changed_input_file_reruns_the_stages_that_read_it(tmp_path: Path, tiny: dict[str, Path]) -> None:
    data = write_tiny_data(tmp_path / "train.tsv", 40)
    path = recipe_file(tmp_path, tiny | {"train": data}, LIGHT[:2])
    out = tmp_path / "run"
    run_pipeline(path, out, quiet=True)
    write_tiny_data(data, 42)
    assert set(statuses(run_pipeline(path, out, resume=True, quiet=True)).values()) == {"ran"}


def test_interrupted_stage_is_redone_on_resume(tmp_path: Path, tiny: dict[str, Path], monkeypatch) -> None:  # noqa: ANN001
    import exporters.onnx.export

    path, out = recipe_file(tmp_path, tiny, LIGHT), tmp_path / "run"
    real = exporters.onnx.export.export_onnx

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(exporters.onnx.export, "export_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(path, out, quiet=True)
    assert (out / "04-export" / STAGE_FILE).is_file() and not (out / "04-export" / DONE).exists()
    assert not (out / "04-export" / "artifact").exists()
    assert "unfinished: 04-export" in summarise_run(out)

    monkeypatch.setattr(exporters.onnx.export, "export_onnx", real)
    result = run_pipeline(path, out, resume=True, quiet=True)
    assert statuses(result) == {
        "01-finetune": "skipped",
        "02-merge": "skipped",
        "03-prune": "skipped",
        "04-export": "resumed",
    }
    assert (out / "04-export" / DONE).is_file() and (out / "04-export" / "artifact" / "model.onnx").is_file()


def test_interrupted_finetune_continues_from_its_checkpoint(
    tmp_path: Path, tiny: dict[str, Path], monkeypatch
) -> None:  # noqa: ANN001
    import dataclasses

    import compressor.finetune
    import compressor.train.loop

    stage = {"finetune": {"method": "full", "train": {"max_steps": 4, "batch_size": 8, "save_steps": 2}}}
    path, out = recipe_file(tmp_path, tiny, [stage]), tmp_path / "run"
    real_train, real_last = compressor.train.loop.train, compressor.train.loop._last_checkpoint

    def interrupted_at_step_2(model, tokenizer, cfg, **kwargs):  # noqa: ANN001, ANN003, ANN202
        real_train(model, tokenizer, dataclasses.replace(cfg, max_steps=2), **kwargs)  # checkpoint-2 is saved
        raise KeyboardInterrupt  # "Ctrl-C" halfway through the 4 steps

    monkeypatch.setattr(compressor.train.loop, "train", interrupted_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(path, out, quiet=True)
    assert not (out / "01-finetune" / DONE).exists()

    found = []
    monkeypatch.setattr(compressor.train.loop, "train", real_train)
    monkeypatch.setattr(compressor.train.loop, "_last_checkpoint", lambda d: found.append(real_last(d)) or found[-1])
    result = run_pipeline(path, out, resume=True, quiet=True)
    assert statuses(result) == {"01-finetune": "resumed"}
    assert [p.name for p in found] == ["checkpoint-2"]  # Trainer continued from the interrupted run's checkpoint
    assert result.stage("finetune").summary["metrics"]["steps"] == 4
    assert not (out / "01-finetune" / ".adapter.partial").exists()


def test_sample_recipes_listed() -> None:
    assert len(SAMPLES) >= 8 and FAST_SAMPLES <= {p.name for p in SAMPLES}


def tiny_overrides(recipe: Path, tiny: dict[str, Path]) -> list[str]:
    """--set items that shrink a sample recipe to seconds: tiny model and data, a few steps, no baselines."""
    kinds = {s.kind for s in load_recipe(recipe).stages}
    items = [f"model={tiny['model']}", f"data.train={tiny['train']}", f"data.eval={tiny['eval']}"]
    per_stage = {
        "analyse": ["analyse.samples=16"],
        "finetune": ["finetune.train.max_steps=2", "finetune.train.batch_size=8", "finetune.train.epochs=1"],
        "prune": ["prune.recover_steps=2", "prune.batch_size=8"],
        "export": ["export.eval_samples=8", "export.timing_runs=2", "export.fuse=off"],
        "benchmark": ["benchmark.runs=2", "benchmark.warmup=1", "benchmark.baselines=[]"],
    }
    return items + [item for kind in sorted(kinds) for item in per_stage.get(kind, [])]


@pytest.mark.parametrize(
    "sample", [pytest.param(p, id=p.name, marks=() if p.name in FAST_SAMPLES else pytest.mark.slow) for p in SAMPLES]
)
def test_sample_recipe_runs_on_a_tiny_model(sample: Path, tmp_path: Path, tiny: dict[str, Path]) -> None:
    result = run_pipeline(sample, tmp_path / "run", overrides=tiny_overrides(sample, tiny), quiet=True)
    assert all((s.dir / DONE).is_file() for s in result.stages)
    assert (result.artifact / "model.onnx").is_file()
    assert "## Result" in result.report_md.read_text()
