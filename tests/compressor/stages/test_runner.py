"""`run_pipeline`: a recipe's stages into numbered directories, hashed and resumable, then the report; the run
directory is marked first, locked while written, and never replaces an input or a folder that is not a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.errors import CompressorError, ConfigError
from compressor.fs import content_hash, out_lock
from compressor.stages import STAGES
from compressor.stages.recipe import load_recipe
from compressor.stages.report import SECTIONS, summarise_run
from compressor.stages.rundir import DONE, RUN_FILE, STAGE_FILE, is_run_dir
from compressor.stages.runner import RunResult, run_pipeline
from tests.compressor.stages.conftest import FAST_EXPORT, FINETUNE, recipe_file
from tests.models import write_tiny_data

SAMPLES = sorted((Path(__file__).parents[3] / "samples" / "recipes").glob("*.yaml"))
# The demo and the plan-driven recipes run by default; the other samples (same stages, other methods) with --run-slow.
FAST_SAMPLES = {"minilm-sst2-fast.yaml", "full.yaml", "compress.yaml"}


LIGHT = [
    FINETUNE,
    {"merge": {}},
    {"prune": {"heads": 0.5, "ffn": 0.5}},
    {"export": {"quantize": "none", **FAST_EXPORT}},
]


def statuses(result) -> dict[str, str]:  # noqa: ANN001
    return {s.dir.name: s.status for s in result.stages}


def test_run_writes_stage_dirs_and_a_full_report(full_run: RunResult) -> None:
    result, out = full_run, full_run.out_dir
    names = [
        "01-finetune",
        "02-merge",
        "03-analyse",
        "04-dense-fp32",
        "05-dense-int8",
        "06-prune",
        "07-compressed-int8",
        "08-benchmark",
    ]
    assert list(statuses(result)) == names and set(statuses(result).values()) == {"ran"}
    for name in names:
        stage = json.loads((out / name / STAGE_FILE).read_text())
        done = json.loads((out / name / DONE).read_text())
        assert len(stage["config_hash"]) == 64 and stage["inputs"]
        assert done["output_hash"] == content_hash(result.stage(name[3:]).out)
    index = json.loads((out / RUN_FILE).read_text())
    assert index["kind"] == "compressor-run" and [s["dir"] for s in index["stages"]] == names
    # the artifacts, by stage name in export order; the last one is the recipe's result
    exports = ["dense-fp32", "dense-int8", "compressed-int8"]
    assert result.artifacts == {n: out / f"{names[i]}" / "artifact" for n, i in zip(exports, (3, 4, 6), strict=True)}
    assert result.artifact == out / "07-compressed-int8" / "artifact"
    assert json.loads((out / "08-benchmark" / STAGE_FILE).read_text())["inputs"]["artifact"].count(":") == 3
    # the plan from analyse drove the pruning: the pruned model has the plan's widths
    plan = json.loads((out / "03-analyse" / "analysis" / "plan.json").read_text())
    pruned = json.loads((out / "06-prune" / "model" / "config.json").read_text())["compressor_structure"]
    assert [len(e["heads"]) for e in pruned["layers"]] == [len(e["heads"]) for e in plan["layers"] if not e["dropped"]]
    rows = result.stage("benchmark").summary["rows"]
    assert [r["name"] for r in rows] == exports
    assert all(r["eval_rows"] == 20 for r in rows)

    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for section in SECTIONS:
        assert f"## {section}\n" in md and f"<h2>{section}</h2>" in page
    assert md.count("![") == 2  # heatmap and accuracy-vs-latency plot, linked
    assert page.count('src="data:image/png;base64,') == 2 and 'src="http' not in page  # self-contained
    assert "heads before" in md and "dense-int8" in md and "CPU flags" in md and "onnxruntime" in md
    summary = summarise_run(out)
    rows = [line.split()[:3] for line in summary.splitlines() if line[:2].isdigit()]
    assert rows == [[name[:2], name[3:], "ran"] for name in names]
    assert "compressed-int8" in summary and "unfinished" not in summary


def test_resume_skips_done_stages_and_reruns_from_a_changed_one(tmp_path: Path, tiny: dict[str, Path]) -> None:
    path, out = recipe_file(tmp_path, tiny, LIGHT), tmp_path / "run"
    first = run_pipeline(path, out, quiet=True)
    assert set(statuses(first).values()) == {"ran"}
    marks = {p.parent.name: p.stat().st_mtime_ns for p in out.glob(f"*/{DONE}")}

    again = run_pipeline(path, out, resume=True, quiet=True)
    assert set(statuses(again).values()) == {"skipped"}
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob(f"*/{DONE}")} == marks
    assert again.artifact == first.artifact == out / "04-export" / "artifact"

    changed = run_pipeline(path, out, resume=True, overrides=["prune.heads=0.25"], quiet=True)
    assert statuses(changed) == {
        "01-finetune": "skipped",
        "02-merge": "skipped",
        "03-prune": "ran",
        "04-export": "ran",  # its input (the pruned model) changed
    }
    structure = json.loads((out / "03-prune" / "model" / "config.json").read_text())["compressor_structure"]
    assert [len(e["heads"]) for e in structure["layers"]] == [3, 3]

    # a shorter recipe: the stage directories it no longer has go; what the user put there stays
    (out / "notes").mkdir()
    shorter = run_pipeline(recipe_file(tmp_path, tiny, LIGHT[:2]), out, resume=True, quiet=True)
    assert set(statuses(shorter).values()) == {"skipped"}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["01-finetune", "02-merge", "notes"]
    assert shorter.artifact is None

    with pytest.raises(ConfigError, match="pass --resume to continue that run, --force to replace it"):
        run_pipeline(path, out, quiet=True)


def test_changed_input_file_reruns_the_stages_that_read_it(tmp_path: Path, tiny: dict[str, Path]) -> None:
    data = write_tiny_data(tmp_path / "train.tsv", 40)
    path = recipe_file(tmp_path, tiny | {"train": data}, LIGHT[:2])
    out = tmp_path / "run"
    run_pipeline(path, out, quiet=True)
    write_tiny_data(data, 42)
    assert set(statuses(run_pipeline(path, out, resume=True, quiet=True)).values()) == {"ran"}


def test_interrupted_stage_is_redone_on_resume(
    tmp_path: Path, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    export = type(STAGES.get("export"))
    real = export.run

    def interrupted(self, ctx, config):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt

    path, out = recipe_file(tmp_path, tiny, LIGHT), tmp_path / "run"
    monkeypatch.setattr(export, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(path, out, quiet=True)
    assert (out / "04-export" / STAGE_FILE).is_file() and not (out / "04-export" / DONE).exists()
    assert not (out / "04-export" / "artifact").exists()
    assert is_run_dir(out)

    monkeypatch.setattr(export, "run", real)
    result = run_pipeline(path, out, resume=True, quiet=True)
    assert statuses(result) == {
        "01-finetune": "skipped",
        "02-merge": "skipped",
        "03-prune": "skipped",
        "04-export": "resumed",
    }
    assert (out / "04-export" / DONE).is_file() and (out / "04-export" / "artifact" / "model.onnx").is_file()


def test_summary_of_an_interrupted_run_names_the_unfinished_stage(
    tmp_path: Path, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self, ctx, config):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(type(STAGES.get("merge")), "run", interrupted)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(recipe_file(tmp_path, tiny, LIGHT[:2]), out, quiet=True)
    summary = summarise_run(out)
    assert [line.split()[:3] for line in summary.splitlines() if line[:2].isdigit()] == [
        ["01", "finetune", "ran"],
        ["02", "merge", "incomplete"],
    ]
    assert f"unfinished: 02-merge; continue with `compressor run RECIPE --out {out} --resume`" in summary


def test_interrupted_finetune_continues_from_its_checkpoint(
    tmp_path: Path, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import compressor.methods.api
    import compressor.train.loop

    stage = {"finetune": {"method": "full", "train": {"max_steps": 4, "batch_size": 8, "save_steps": 2}}}
    path, out = recipe_file(tmp_path, tiny, [stage]), tmp_path / "run"
    real_train, real_last = compressor.methods.api.train_loop, compressor.train.loop._last_checkpoint

    def interrupted_at_step_2(model, tokenizer, cfg, **kwargs):  # noqa: ANN001, ANN003, ANN202
        real_train(model, tokenizer, dataclasses.replace(cfg, max_steps=2), **kwargs)  # checkpoint-2 is saved
        raise KeyboardInterrupt  # "Ctrl-C" halfway through the 4 steps

    monkeypatch.setattr(compressor.methods.api, "train_loop", interrupted_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(path, out, quiet=True)
    assert not (out / "01-finetune" / DONE).exists()

    found = []
    monkeypatch.setattr(compressor.methods.api, "train_loop", real_train)
    monkeypatch.setattr(compressor.train.loop, "_last_checkpoint", lambda d: found.append(real_last(d)) or found[-1])
    result = run_pipeline(path, out, resume=True, quiet=True)
    assert statuses(result) == {"01-finetune": "resumed"}
    assert [p.name for p in found] == ["checkpoint-2"]  # Trainer continued from the interrupted run's checkpoint
    assert result.stage("finetune").summary["metrics"]["steps"] == 4
    assert not (out / "01-finetune" / ".adapter.partial").exists()


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path: Path, tiny: dict[str, Path]) -> None:
    """A user's folder that merely looks like one (a `01-finetune/` of their own) is neither resumed nor emptied."""
    out = tmp_path / "mine"
    (out / "01-finetune").mkdir(parents=True)
    (out / "01-finetune" / "data.txt").write_text("my notes", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        run_pipeline(recipe_file(tmp_path, tiny, LIGHT), out, resume=True, quiet=True)
    assert str(info.value) == (
        f"--out `{out}` is not a run directory (it has no run.json from `compressor run`); --resume continues a run: "
        "pass that run's --out, or drop --resume and choose a new directory"
    )
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["01-finetune", "01-finetune/data.txt"]
    assert (out / "01-finetune" / "data.txt").read_text(encoding="utf-8") == "my notes"


def test_out_that_holds_an_input_is_refused(tmp_path: Path, tiny: dict[str, Path], monkeypatch) -> None:  # noqa: ANN001
    path = recipe_file(tmp_path, tiny, LIGHT)
    model_dir, train = tiny["model"], tiny["train"]
    for out, what, item in (
        (model_dir, "is", model_dir),  # --out is the model directory
        (model_dir.parent, "contains", model_dir),  # --out holds the model directory (and the data files)
        (train, "is", train),  # --out is a data file
    ):
        with pytest.raises(ConfigError) as info:
            run_pipeline(path, out, force=True, quiet=True)
        assert str(info.value) == (
            f"--out `{out}` {what} the input `{item}`; replacing it would delete that input: choose another --out"
        )
    assert (model_dir / "model.safetensors").is_file() and train.is_file()
    assert not is_run_dir(model_dir.parent)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="is the working directory or one of its parents"):
        run_pipeline(path, Path("."), force=True, quiet=True)
    assert path.is_file()


def test_a_second_writer_of_the_same_out_is_refused(tmp_path: Path, tiny: dict[str, Path]) -> None:
    out = tmp_path / "run"
    with out_lock(out):  # another compressor process writing --out
        with pytest.raises(CompressorError) as info:
            run_pipeline(recipe_file(tmp_path, tiny, LIGHT), out, quiet=True)
    assert str(info.value) == (
        f"`{out}` is being written by another compressor process; wait for it to finish or choose another --out"
    )
    assert not out.exists()  # refused before the run was marked


def test_only_rank_0_of_a_distributed_run_takes_the_out_lock(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """torchrun starts every rank with the same --out: rank 0 locks and writes, the others must not be refused."""
    out = tmp_path / "run"
    with out_lock(out):  # rank 0
        monkeypatch.setenv("RANK", "1")
        with out_lock(out):  # rank 1 goes on
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(CompressorError, match="is being written by another compressor process"):
            with out_lock(out):
                pass


def test_sample_recipes_listed() -> None:
    assert SAMPLES
    assert len(SAMPLES) >= 9 and FAST_SAMPLES <= {p.name for p in SAMPLES}


def tiny_overrides(recipe: Path, tiny: dict[str, Path]) -> list[str]:
    """--set items that shrink a sample recipe to seconds: tiny model and data, a few steps, few timing runs."""
    items = [f"model={tiny['model']}", f"data.train={tiny['train']}", f"data.eval={tiny['eval']}"]
    if load_recipe(recipe).data.text_pair_column is not None:  # the tiny sentiment files hold single sentences
        items.append("data.text_pair_column=null")
    per_stage = {
        "analyse": ["samples=16"],
        "finetune": ["train.max_steps=2", "train.batch_size=8", "train.epochs=1"],
        "prune": ["batch_size=8", "samples=16"],
        "export": ["eval_samples=8", "timing_runs=2", "fuse=off", "threads=1"],
        "benchmark": ["runs=2", "warmup=1", "threads=1"],
    }
    for entry in load_recipe(recipe).stages:
        stage_items = per_stage.get(entry.stage.key, [])
        if entry.stage.key == "prune" and "distill" in entry.config.recover:  # distillation cut to 2 steps
            stage_items = ["recover_epochs=0", "recover_steps=2", *stage_items]
        items += [f"{entry.name}.{item}" for item in stage_items]
    return items


@pytest.mark.parametrize(
    "sample", [pytest.param(p, id=p.name, marks=() if p.name in FAST_SAMPLES else pytest.mark.slow) for p in SAMPLES]
)
def test_sample_recipe_runs_on_a_tiny_model(sample: Path, tmp_path: Path, tiny: dict[str, Path]) -> None:
    result = run_pipeline(sample, tmp_path / "run", overrides=tiny_overrides(sample, tiny), quiet=True)
    assert all((s.dir / DONE).is_file() for s in result.stages)
    assert [s.name for s in result.stages] == [e.name for e in load_recipe(sample).stages]
    assert (result.artifact / "model.onnx").is_file()
    assert "## Result" in result.report_md.read_text()
