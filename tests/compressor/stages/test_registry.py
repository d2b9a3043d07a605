"""The stage registry: what every registered stage declares (an example recipe entry, a config class, its slots,
how the report shows it) holds for each of them, and every stage is used by a sample recipe."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from compressor.stages import STAGES
from compressor.stages.base import SLOTS
from compressor.stages.recipe import load_recipe, parse_recipe
from compressor.stages.recipe_text import parse_yaml, stage_entry
from compressor.stages.runner import RunResult
from tests.models import write_tiny_data

SAMPLES = sorted((Path(__file__).parents[3] / "samples" / "recipes").glob("*.yaml"))


def test_samples_exist() -> None:
    assert SAMPLES


def test_every_stage_is_used_by_a_sample_recipe() -> None:
    stages_used = {entry.stage.key for path in SAMPLES for entry in load_recipe(path).stages}
    assert set(STAGES.names()) <= stages_used


def example_entry(key: str) -> dict:
    """A stage's `example`, as the raw recipe entry it is written as (`- key: {…}`)."""
    example = STAGES.get(key).example
    assert example.strip(), f"stage `{key}` has no example"
    items = parse_yaml(example, source=f"{key}.example")
    assert isinstance(items, list) and len(items) == 1, example
    assert stage_entry(items[0], 0, key)[0] == key
    return items[0]


def prerequisites(key: str) -> list[dict]:
    """The examples of the stages that fill what `key`'s example reads (an adapter, a plan, artifacts), in order."""
    stage = STAGES.get(key)
    _, body = stage_entry(example_entry(key), 0, key)
    values = {k: v for k, v in (body or {}).items() if k != "name"}  # `name` is the recipe's, not the config's
    config = stage.parse(values, source=key, base_dir=Path("."))
    before: list[dict] = []
    for slot in stage.needs(config):
        if slot == "model":  # the recipe's `model` fills it
            continue
        (giver,) = [s for s in STAGES.names() if STAGES.get(s).gives == slot]
        before += prerequisites(giver) + [example_entry(giver)]
    return before


@pytest.mark.parametrize("key", STAGES.names())
def test_example_parses_as_a_recipe_entry(key: str, tmp_path: Path) -> None:
    from tests.models import save_tiny_checkpoint

    model = save_tiny_checkpoint(tmp_path / "tiny")
    data = {
        "train": str(write_tiny_data(tmp_path / "train.tsv", 10)),
        "eval": str(write_tiny_data(tmp_path / "v.tsv")),
    }
    stages = [*prerequisites(key), example_entry(key)]
    raw = {"version": 2, "name": "example", "model": str(model), "data": data, "stages": stages}
    recipe = parse_recipe(raw, base_dir=tmp_path, source=f"{key}.example")
    entry = recipe.stages[-1]
    assert entry.stage is STAGES.get(key) and isinstance(entry.config, STAGES.get(key).config_cls)
    if key == "merge":
        assert [e.stage.key for e in recipe.stages] == ["finetune", "merge"]
    if key == "benchmark":
        assert [e.stage.key for e in recipe.stages] == ["export", "benchmark"]


@pytest.mark.parametrize("key", STAGES.names())
def test_stage_declarations(key: str) -> None:
    stage = STAGES.get(key)
    assert stage.key == key and stage.output
    assert dataclasses.is_dataclass(stage.config_cls) and stage.config_cls.kind
    assert stage.gives in (*SLOTS, None) and set(stage.consumes) <= set(SLOTS)
    assert set(stage.needs(stage.config_cls())) <= set(SLOTS)
    fields = {f.name for f in dataclasses.fields(stage.config_cls)}
    assert set(getattr(stage, "path_keys", {})) <= fields  # --set resolves these paths from the working directory


def test_repeatable_stages() -> None:
    """Exports repeat (dense baselines and the result), prunes may too; the rest run once per recipe."""
    assert {k for k in STAGES.names() if STAGES.get(k).repeatable} == {"export", "prune"}


@pytest.mark.parametrize("key", STAGES.names())
def test_row_of_a_real_summary(key: str, full_run: RunResult) -> None:
    """Each stage's cells of the report's Stages table, from the summary a tiny run of it recorded."""
    done = [s for s in full_run.stages if s.key == key]
    assert done, f"the tiny run has no `{key}` stage"
    for stage_run in done:
        row = STAGES.get(key).row(stage_run.summary)
        assert set(row) == {"params", "accuracy", "note"} and all(isinstance(v, str) for v in row.values())
        assert isinstance(STAGES.get(key).describe(stage_run.summary), str)
        if key in ("finetune", "merge", "prune", "export"):  # stages that leave a model: its size and accuracy
            assert row["params"][0].isdigit(), row
        if key in ("finetune", "prune", "export", "benchmark"):  # the tiny run has validation data
            assert row["accuracy"].endswith("%") or row["accuracy"].endswith("rows)"), row
    notes = {s.name: STAGES.get(key).row(s.summary)["note"] for s in done}
    if key == "finetune":
        assert notes == {"finetune": "method full"}
    elif key == "export":
        assert list(notes) == ["dense-fp32", "dense-int8", "compressed-int8"]
        for name, note in notes.items():
            quantize = "none" if name == "dense-fp32" else "dynamic"
            assert re.fullmatch(rf"{quantize}, plain(\+sum-norms)? graph, \d+\.\d MB", note), note  # fuse off
    elif key == "merge":
        assert notes["merge"].startswith("max |Δlogit| ")
    elif key == "analyse":
        assert notes["analyse"].startswith("head-gradient, params=0.6; plan keeps ")
    elif key == "prune":
        assert notes["prune"].startswith("encoder ") and notes["prune"].endswith("% of its parameters")
    elif key == "benchmark":
        assert notes["benchmark"].startswith("compressed-int8: ") and notes["benchmark"].endswith(
            "× faster than dense-fp32"
        )
