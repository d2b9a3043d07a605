"""Recipes: a compression written down once in YAML, validated on load against the stage registry.

```yaml
version: 2
name: minilm-sst2-fast
model: minilm                    # a checkpoint directory, or `minilm` (bundled)
data:
  train: ../data/sst2/train.tsv  # relative paths are relative to the recipe file
  eval: ../data/sst2/validation.tsv
stages:                          # in order; `name` tells repeated stages apart (default: the stage key)
  - finetune: {method: lora, options: {rank: 8}, train: {lr: 5e-4, epochs: 1}}
  - merge: {}
  - export: {name: dense-fp32, quantize: none}
  - analyse: {scorer: fisher, budget: flops=0.5}
  - prune: {plan: analyse, recover: distill, recover_steps: 120}
  - export: {name: compressed-int8}
  - benchmark: {threads: 1}      # compares every artifact exported before it
```

A stage's keys are the fields of its config (`compressor.stages.STAGES[key].config_cls`), plus `name`. Unknown
keys, wrong types, missing files and stages in an order that cannot run are one-line errors naming the key.
Scalars follow YAML 1.2: `1e-4` is a number and `off`/`no` are strings. `--set NAME.key=value` overrides any value
before validation (`--set model=DIR`, `--set finetune.train.max_steps=10`, `--set data.train=FILE`).
Version 1 recipes (a benchmark's `baselines`, prune's `vocab: true`) are migrated on load.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from compressor.checkpoint import is_hub_id, resolve_model_path
from compressor.errors import ConfigError, DataError, ModelError
from compressor.schema import build_strict, config_to_dict, is_int
from compressor.stages.base import STAGES, Stage
from compressor.stages.context import DataSpec, resolve_path
from compressor.stages.recipe_text import TOP_KEYS, VERSION, apply_overrides, parse_yaml, stage_entry


@dataclass
class Entry:
    """One stage of a recipe: its name in the run, the registered stage, its validated config."""

    name: str
    stage: Stage
    config: Any

    def to_dict(self) -> dict[str, Any]:
        body = config_to_dict(self.config)["fields"]
        return {self.stage.key: ({"name": self.name} if self.name != self.stage.key else {}) | body}


@dataclass(kw_only=True)
class Recipe:
    """A validated recipe: the model, the data and the stages in order."""

    kind: ClassVar[str] = "recipe"
    version: ClassVar[int] = VERSION

    name: str
    model: str
    description: str = ""
    data: DataSpec
    stages: list[Entry]
    source: Path | None = None

    def entry(self, name: str) -> Entry | None:
        return next((e for e in self.stages if e.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe in recipe form (every default filled in; parses back to an equal recipe)."""
        return {
            "version": VERSION,
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "data": config_to_dict(self.data)["fields"],
            "stages": [entry.to_dict() for entry in self.stages],
        }


def path_keys(key: str) -> dict[str, tuple[str, ...]]:
    """A stage's path-valued settings and the words they also take (for `--set`)."""
    return dict(getattr(STAGES.get(key), "path_keys", {}) or {}) if key in STAGES else {}


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override (`["name.key=value", …]`) and validate a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"recipe `{path}` not found"
            + ("; it is a directory" if path.is_dir() else "")
            + "; pass a recipe YAML file (examples in samples/recipes/)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"recipe `{path}` is not UTF-8 text") from None
    raw = parse_yaml(text, source=str(path))
    if raw is None:
        raise ConfigError(f"recipe `{path}` is empty; it needs at least `model` and `stages`")
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe `{path}` must be a mapping with keys {', '.join(TOP_KEYS)}")
    raw = apply_overrides(_migrate(raw, str(path)), overrides or [], path_keys)
    recipe = parse_recipe(raw, base_dir=path.parent, source=str(path), default_name=path.stem)
    recipe.source = path.resolve()
    return recipe


def parse_recipe(raw: dict[str, Any], *, base_dir: Path, source: str, default_name: str = "recipe") -> Recipe:
    """Validate raw recipe data (already overridden) into a `Recipe`; relative paths resolve from `base_dir`."""
    raw = _migrate(raw, source)
    unknown = sorted(set(map(str, raw)) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key `{unknown[0]}`; allowed: {', '.join(TOP_KEYS)}")
    name = _string(raw.get("name", default_name), "name", source)
    description = _string(raw.get("description") or "", "description", source)
    if "model" not in raw or raw["model"] is None:
        raise ConfigError(f"{source}: missing `model` (a checkpoint directory, or `minilm`)")
    model = _resolve_model(_string(raw["model"], "model", source), base_dir, source)
    data = _parse_data(raw.get("data"), base_dir, source)
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{source}: `stages` must be a non-empty list, e.g. `- finetune: {{method: lora}}`")
    entries: list[Entry] = []
    for i, item in enumerate(stages_raw):
        key, body = stage_entry(item, i, source)
        if key not in STAGES:
            raise ConfigError(f"{source}: unknown stage `{key}`; allowed: {', '.join(STAGES.names())}")
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: stage `{key}` must be a mapping of settings; got {body!r}")
        body = dict(body)
        entry_name = _stage_name(body.pop("name", key), key, source)
        where = f"{source}: stage `{entry_name}`"
        stage = STAGES.get(key)
        if any(e.name == entry_name for e in entries):
            hint = "give each a distinct `name`" if stage.repeatable else "each stage runs once"
            raise ConfigError(f"{where} appears twice; {hint}")
        if not stage.repeatable and any(e.stage.key == key for e in entries):
            raise ConfigError(f"{where}: stage `{key}` appears twice; each stage runs once")
        entries.append(Entry(entry_name, stage, stage.parse(body, source=where, base_dir=base_dir)))
    recipe = Recipe(name=name, model=model, description=description, data=data, stages=entries)
    check_flow(recipe, source)
    check_data(recipe, source)
    return recipe


SLOT_WORDS = {
    "model": "a model",
    "adapter": "an adapter",
    "plan": "the plan of an analysis (`plan: analyse`)",
    "artifact": "exported artifacts",
}


def check_flow(recipe: Recipe, source: str) -> None:
    """Every stage finds what it reads: the model, an adapter to merge, a plan, artifacts to compare.

    The recipe's `model` fills the `model` slot; each stage fills the slot it gives and empties the ones it leaves
    stale (a fine-tune leaves an adapter that must be merged before anything reads a model again).
    """
    filled: dict[str, str] = {"model": "the recipe's `model`"}
    emptied: dict[str, Entry] = {}  # slot → the stage that left it stale
    for entry in recipe.stages:
        for slot in entry.stage.needs(entry.config):
            if slot in filled:
                continue
            givers = " or ".join(f"`{s}`" for s in STAGES.names() if STAGES.get(s).gives == slot)
            article = "an" if givers[1] in "aeiou" else "a"
            if slot in emptied:
                left = emptied[slot]  # e.g. a fine-tune: what takes its output (a merge) brings the slot back
                fix = next(s for s in STAGES.names() if left.stage.gives in STAGES.get(s).consumes)
                raise ConfigError(
                    f"{source}: stage `{entry.name}` reads {SLOT_WORDS[slot]}, but `{left.name}` left it "
                    f"unmerged: add a `{fix}` stage right after `{left.name}`"
                )
            raise ConfigError(
                f"{source}: stage `{entry.name}` reads {SLOT_WORDS[slot]}: add {article} {givers} stage before it"
            )
        for slot in entry.stage.consumes:
            filled.pop(slot, None)
            emptied[slot] = entry
        if entry.stage.gives:
            filled[entry.stage.gives] = entry.name
            emptied.pop(entry.stage.gives, None)


def check_data(recipe: Recipe, source: str) -> None:
    """Stages that train or score need `data.train`; those that cannot run without validation data need `data.eval`."""
    for entry in recipe.stages:
        for which, required in entry.stage.data(entry.config).items():
            if required and getattr(recipe.data, which) is None:
                what = "training" if which == "train" else "validation"
                raise ConfigError(f"{source}: stage `{entry.name}` needs {what} data: set `data.{which}`")


# --- pieces ---------------------------------------------------------------------------------------------------------


def _string(value: Any, key: str, source: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{source}: `{key}` must be a string; got {value!r}")
    return value


def _stage_name(value: Any, key: str, source: str) -> str:
    import re

    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", value):
        raise ConfigError(
            f"{source}: stage `{key}`: `name` must be lower-case letters, digits and dashes (it names the stage's "
            f"directory); got {value!r}"
        )
    return value


def _resolve_model(value: str, base_dir: Path, source: str) -> str:
    if value == "minilm":
        return value
    path = resolve_path(value, base_dir)
    if not path.exists() and is_hub_id(value):  # a hub id: its snapshot in the Hugging Face cache
        return str(resolve_model_path(value))
    if not path.is_dir():
        raise ModelError(
            f"{source}: model `{value}` not found (looked for the directory `{path}`); "
            "pass a checkpoint directory, `minilm` or a hub id"
        )
    return os.path.abspath(path)


def _parse_data(raw: Any, base_dir: Path, source: str) -> DataSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: `data` must be a mapping with keys train, eval, …; got {raw!r}")
    spec = build_strict(DataSpec, raw, f"{source}: data")
    for key in ("train", "eval"):
        value = getattr(spec, key)
        if value is None:
            continue
        path = resolve_path(value, base_dir)
        if not path.exists():
            raise DataError(f"{source}: data.{key} `{value}` not found (looked for `{path}`)")
        setattr(spec, key, os.path.abspath(path))
    return spec


def _migrate(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A version-1 recipe in version-2 form; a newer version than this compressor knows is an error."""
    version = raw.get("version", 1)
    if not is_int(version) or version < 1:
        raise ConfigError(f"{source}: `version` must be a positive integer; got {version!r}")
    if version > VERSION:
        raise ConfigError(f"{source}: recipe version {version} is newer than this compressor understands ({VERSION})")
    if version == VERSION:
        return raw
    return _migrate_v1(raw, source)


def _migrate_v1(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """v1 → v2: the benchmark's `baselines` (dense exports of the unpruned model, fp32 and int8, made right before
    the first prune or export) become explicit export stages; prune's `vocab: true` becomes `vocab: train`; the
    benchmark's `plot` goes (the plot is written whenever there is validation data)."""
    raw = copy.deepcopy(raw)
    raw["version"] = VERSION
    stages = raw.get("stages")
    if not isinstance(stages, list):
        return raw
    bodies = [(stage_entry(item, i, "recipe")) for i, item in enumerate(stages)]
    export = next((b for k, b in bodies if k == "export" and isinstance(b, dict)), {}) or {}
    bench = next((b for k, b in bodies if k == "benchmark"), None)
    baselines: list[Any] = []
    if isinstance(bench, dict):
        baselines = bench.pop("baselines", ["fp32", "int8"]) or []
        bench.pop("plot", None)
        if (
            not isinstance(baselines, list)
            or any(b not in ("fp32", "int8") for b in baselines)
            or len(set(baselines)) != len(baselines)
        ):
            raise ConfigError(f"{source}: benchmark `baselines` must be a subset of fp32, int8; got {baselines!r}")
    elif bench is not None or any(k == "benchmark" for k, _ in bodies):
        baselines = ["fp32", "int8"]
    out = []
    for key, body in bodies:
        if key in ("prune", "export") and baselines:
            for precision in baselines:
                quantize = export.get("quantize", "dynamic")
                quantize = "none" if precision == "fp32" else ("dynamic" if quantize == "none" else quantize)
                out.append({"export": dict(export) | {"name": f"dense-{precision}", "quantize": quantize}})
            baselines = []
        if key == "prune" and isinstance(body, dict) and isinstance(body.get("vocab"), bool):
            body["vocab"] = "train" if body["vocab"] else None
        out.append({key: body} if body is not None else key)
    raw["stages"] = out
    return raw
