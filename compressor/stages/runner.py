"""`run_pipeline`: a recipe's stages in order, one directory each, resumable; then the report. And `run_stage`, the
same for one stage run by its own command.

Written once for every stage: what a stage reads is hashed (its config, the slots it needs, the data files it
reads), `Run.begin` decides skip/resume/run from those hashes, `stage.run` writes its output, `Run.finish` marks it
done, and the slot it gives is filled for the stages after it. See compressor/stages/rundir.py for the files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.fs import check_out_dir, out_lock
from compressor.schema import config_to_dict, hash_record, save_json
from compressor.stages.base import Context, Stage
from compressor.stages.context import DataFiles, DataSpec, check_inputs_outside
from compressor.stages.recipe import Recipe, load_recipe, parse_recipe, path_keys
from compressor.stages.recipe_text import apply_overrides
from compressor.stages.report import write_report
from compressor.stages.rundir import RECIPE_FILE, Run, StageRun

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What `run_pipeline` did: every stage (in order) and the report files."""

    out_dir: Path
    recipe: Recipe
    stages: list[StageRun]
    report_md: Path
    report_html: Path
    artifacts: dict[str, Path] = field(default_factory=dict)  # exported artifacts by stage name, in order

    @property
    def artifact(self) -> Path | None:
        """The last artifact exported (the recipe's result)."""
        return next(reversed(self.artifacts.values()), None)

    def stage(self, name: str) -> StageRun | None:
        return next((s for s in self.stages if s.name == name), None)


@dataclass
class _Slots:
    """What the stages so far have produced, and the content hash of each (what later stages depend on)."""

    model: str | None
    adapter: Path | None = None
    plan: Path | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def inputs(self, stage: Stage, config: Any) -> dict[str, str]:
        return {slot: self.hashes[slot] for slot in stage.needs(config) if slot in self.hashes}

    def fill(self, stage: Stage, name: str, done: StageRun) -> None:
        for slot in stage.consumes:
            self.hashes.pop(slot, None)
        if stage.gives == "artifact":  # artifacts accumulate: a benchmark depends on every one, by name
            self.artifacts[name] = done.out
            self.hashes[f"artifact:{name}"] = done.output_hash
            self.hashes["artifact"] = "+".join(f"{n}:{self.hashes['artifact:' + n]}" for n in self.artifacts)
        elif stage.gives is not None:
            setattr(self, stage.gives, str(done.out) if stage.gives == "model" else done.out)
            self.hashes[stage.gives] = done.output_hash


def run_pipeline(
    recipe: Recipe | str | Path,
    out_dir: Path,
    *,
    resume: bool = False,
    overrides: list[str] | None = None,
    force: bool = False,
    quiet: bool = False,
) -> RunResult:
    """Run a recipe's stages into `out_dir` (one directory per stage), then write report.md and report.html.

    Args:
        recipe: a `Recipe`, or the path of a recipe YAML file.
        resume: keep the stages of an earlier run of `out_dir` whose config and inputs are unchanged.
        overrides: `name.key=value` items applied before validation (`--set`).
        force: replace a non-empty `out_dir` (without `resume`).
    """
    recipe = _resolve_recipe(recipe, overrides)
    out_dir = Path(out_dir)
    check_inputs_outside(out_dir, [recipe.model, recipe.data.train, recipe.data.eval, recipe.source])
    with out_lock(out_dir):
        run = Run.open(out_dir, resume=resume, force=force, recipe_name=recipe.name)
        source = str(recipe.source) if recipe.source else None
        save_json(out_dir / RECIPE_FILE, recipe.to_dict() | {"source": source})
        data = DataFiles(recipe.data)
        slots = _Slots(model=recipe.model, hashes={"model": run.external(recipe.model)})
        for entry in recipe.stages:
            stage, config = entry.stage, entry.config
            reads = stage.data(config)
            record = {"config": hash_record(config)}
            inputs = slots.inputs(stage, config)
            if reads:
                record["data"] = _data_record(recipe.data)
                for which in reads:
                    path = data.path(which)
                    if path is not None:
                        inputs[f"data.{which}"] = run.external(path)
            done = run.begin(entry.name, stage.key, stage.output, record, inputs)
            if not done.done:
                ctx = Context(
                    out=done.out,
                    data=data,
                    model=slots.model,
                    adapter=slots.adapter,
                    plan=slots.plan,
                    artifacts=dict(slots.artifacts),
                    history=list(slots.history),
                    resume=done.status == "resumed",
                    quiet=quiet,
                    name=entry.name,
                )
                summary = stage.run(ctx, config)
                run.finish(done, summary)
                line = stage.describe(summary)
                if line:
                    logger.info("%s: %s", entry.name, line)
            slots.fill(stage, entry.name, done)
            slots.history.append({"stage": entry.name, "key": stage.key, "config": config_to_dict(config)})
        run.write_index(prune_stale=True)
        md, html = write_report(out_dir)
    return RunResult(out_dir, recipe, run.stages, md, html, dict(slots.artifacts))


def _data_record(spec: DataSpec) -> dict[str, Any]:
    """The data settings a stage's hash covers (`task` only when set: runs recorded before it existed resume)."""
    return hash_record(spec)["fields"]


def run_stage(stage: Stage, ctx: Context, config: Any, *, force: bool = False, inputs: list[Any] = ()) -> dict:
    """One stage, as its own command runs it: `ctx.out` checked and locked, then written whole by `stage.run`.

    Args:
        inputs: the files and directories the stage reads (refused as --out, or inside it).
    """
    check_out_dir(ctx.out, force=force or ctx.resume)
    check_inputs_outside(ctx.out, list(inputs))
    with out_lock(ctx.out):
        return stage.run(ctx, config)


def _resolve_recipe(recipe: Recipe | str | Path, overrides: list[str] | None) -> Recipe:
    if not isinstance(recipe, Recipe):
        return load_recipe(recipe, overrides)
    if not overrides:
        return recipe
    raw = apply_overrides(recipe.to_dict(), overrides, path_keys)
    base = recipe.source.parent if recipe.source else Path.cwd()
    parsed = parse_recipe(raw, base_dir=base, source=str(recipe.source or "recipe"))
    parsed.source = recipe.source
    return parsed
