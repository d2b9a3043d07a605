"""Recipes: a compression written down once in YAML, validated on load into a tree of dataclasses.

```yaml
name: minilm-sst2-fast
model: minilm                    # a checkpoint directory, or `minilm` (bundled)
data:
  train: ../data/sst2/train.tsv  # relative paths are relative to the recipe file
  eval: ../data/sst2/validation.tsv
  max_train_samples: 2000
stages:                          # in order; each stage at most once
  - analyse: {scorer: head-gradient, budget: params=0.6}
  - finetune: {method: lora, options: {rank: 8}, train: {lr: 5e-4, epochs: 1}}
  - merge: {}
  - prune: {plan: analyse, recover_steps: 120}   # or heads: 0.5, ffn: 0.5
  - export: {quantize: dynamic, fuse: "off"}
  - benchmark: {threads: 2, batch: 1, seq_len: 128, baselines: [fp32, int8]}
```

Stage keys are the fields of the stage's own config (`AnalyseConfig`, `TrainConfig` under `finetune.train`, the
method's config under `finetune.options`, `PruneConfig`, `ExportConfig`, `BenchmarkConfig`) plus a few recipe keys
(`method`, `vocab`, `baselines`, `plot`, `atol`). Unknown keys, wrong types and missing files are one-line errors
that name the key. Scalars follow YAML 1.2: `1e-4` is a number and `off`/`no` are strings (only true/false are
booleans). `--set stage.key=value` overrides any value before validation (`--set model=DIR`,
`--set finetune.train.max_steps=10`, `--set data.train=FILE`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from compressor.errors import ConfigError, DataError, ModelError
from compressor.recipe_text import (
    BASELINES,
    PLAN_FROM_ANALYSE,
    STAGES,
    TOP_KEYS,
    VERSION,
    apply_overrides,
    parse_yaml,
    stage_entry,
)
from compressor.schema import build_config, config_to_dict

__all__ = ["STAGES", "Recipe", "apply_overrides", "load_recipe", "parse_recipe", "parse_yaml"]


# --- the dataclass tree -------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class DataSpec:
    """Where the labelled data is and how to read it."""

    kind: ClassVar[str] = "data"
    version: ClassVar[int] = 1

    train: str | None = field(
        default=None,
        metadata={
            "help": "Training data (csv, tsv, jsonl, parquet or a datasets dir); for analyse, finetune and recovery."
        },
    )
    eval: str | None = field(
        default=None, metadata={"help": "Validation data: accuracy after each stage, the int8 gate and the benchmark."}
    )
    text_column: str | None = field(default=None, metadata={"help": "Text column (default: text, sentence, …)."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text column for pair tasks."})
    label_column: str = field(default="label", metadata={"help": "Label column (strings or integers)."})
    max_train_samples: int | None = field(
        default=None,
        metadata={
            "help": "Fine-tune and analyse on a seeded sample of N training rows (recovery reads the whole file)."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of the training sample."})

    def __post_init__(self) -> None:
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ConfigError(
                f"`data.max_train_samples` must be a positive integer or null; got {self.max_train_samples!r}"
            )

    @property
    def columns(self) -> dict[str, Any]:
        return {
            "text_column": self.text_column,
            "text_pair_column": self.text_pair_column,
            "label_column": self.label_column,
        }


@dataclass(kw_only=True)
class AnalyseStage:
    kind: ClassVar[str] = "analyse"
    config: Any  # AnalyseConfig


@dataclass(kw_only=True)
class FinetuneStage:
    kind: ClassVar[str] = "finetune"
    method: str = field(default="full", metadata={"help": "A registered fine-tuning method."})
    options: Any = None  # the method's config
    train: Any = None  # TrainConfig


@dataclass(kw_only=True)
class MergeStage:
    kind: ClassVar[str] = "merge"
    atol: float = field(default=1e-4, metadata={"help": "Max |Δlogit| between the merged and unmerged model."})


@dataclass(kw_only=True)
class PruneStage:
    kind: ClassVar[str] = "prune"
    vocab: bool = field(default=False, metadata={"help": "Keep only the token ids seen in the training data."})
    config: Any = None  # PruneConfig; `plan: analyse` takes the analyse stage's plan.json


@dataclass(kw_only=True)
class ExportStage:
    kind: ClassVar[str] = "export"
    config: Any = None  # ExportConfig


@dataclass(kw_only=True)
class BenchmarkStage:
    kind: ClassVar[str] = "benchmark"
    baselines: list[str] = field(
        default_factory=lambda: list(BASELINES),
        metadata={"help": "Dense exports of the unpruned (merged) model to compare with: fp32, int8."},
    )
    plot: bool = field(default=True, metadata={"help": "Write the accuracy-vs-latency PNG (needs data.eval)."})
    config: Any = None  # BenchmarkConfig


Stage = AnalyseStage | FinetuneStage | MergeStage | PruneStage | ExportStage | BenchmarkStage


@dataclass(kw_only=True)
class Recipe:
    """A validated recipe: the model, the data and the stages in order."""

    kind: ClassVar[str] = "recipe"
    version: ClassVar[int] = VERSION

    name: str
    model: str
    description: str = ""
    data: DataSpec
    stages: list[Stage]
    source: Path | None = None

    def stage(self, kind: str) -> Any:
        """The stage of this kind, or None."""
        return next((s for s in self.stages if s.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe in recipe form (every default filled in; parses back to an equal recipe)."""
        return {
            "version": VERSION,
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "data": config_to_dict(self.data)["fields"],
            "stages": [{s.kind: stage_dict(s)} for s in self.stages],
        }


def stage_dict(stage: Any) -> dict[str, Any]:
    """A stage's resolved settings as one flat mapping, the way it is written in a recipe."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(stage):
        value = getattr(stage, f.name)
        if f.name == "config":
            out.update(config_to_dict(value)["fields"])
        elif f.name in ("options", "train"):
            out[f.name] = config_to_dict(value)["fields"]
        else:
            out[f.name] = list(value) if isinstance(value, list) else value
    return out


# --- loading ------------------------------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override (`["stage.key=value", …]`) and validate a recipe file."""
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
    raw = apply_overrides(raw, overrides or [])
    recipe = parse_recipe(raw, base_dir=path.parent, source=str(path), default_name=path.stem)
    recipe.source = path.resolve()
    return recipe


def parse_recipe(raw: dict[str, Any], *, base_dir: Path, source: str, default_name: str = "recipe") -> Recipe:
    """Validate raw recipe data (already overridden) into a `Recipe`; relative paths resolve from `base_dir`."""
    unknown = sorted(set(map(str, raw)) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key `{unknown[0]}`; allowed: {', '.join(TOP_KEYS)}")
    version = raw.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"{source}: `version` must be a positive integer; got {version!r}")
    if version > VERSION:
        raise ConfigError(f"{source}: recipe version {version} is newer than this compressor understands ({VERSION})")
    name = _string(raw.get("name", default_name), "name", source)
    description = _string(raw.get("description") or "", "description", source)
    if "model" not in raw or raw["model"] is None:
        raise ConfigError(f"{source}: missing `model` (a checkpoint directory, or `minilm`)")
    model = _resolve_model(_string(raw["model"], "model", source), base_dir, source)
    data = _parse_data(raw.get("data"), base_dir, source)
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{source}: `stages` must be a non-empty list, e.g. `- finetune: {{method: lora}}`")
    stages = []
    for i, entry in enumerate(stages_raw):
        stage_name, body = stage_entry(entry, i, source)
        if stage_name not in STAGES:
            raise ConfigError(f"{source}: unknown stage `{stage_name}`; allowed: {', '.join(STAGES)}")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: stage `{stage_name}` must be a mapping of settings; got {body!r}")
        stages.append(_PARSERS[stage_name](body, f"{source}: stage `{stage_name}`", base_dir))
    recipe = Recipe(name=name, model=model, description=description, data=data, stages=stages)
    check_order(recipe, source)
    check_data_needs(recipe, source)
    return recipe


def _string(value: Any, key: str, source: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{source}: `{key}` must be a string; got {value!r}")
    return value


def _resolve_path(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def _resolve_model(value: str, base_dir: Path, source: str) -> str:
    if value == "minilm":
        return value
    path = _resolve_path(value, base_dir)
    if not path.is_dir():
        raise ModelError(
            f"{source}: model `{value}` not found (looked for the directory `{path}`); "
            "pass a checkpoint directory or `minilm`"
        )
    return os.path.abspath(path)


def _parse_data(raw: Any, base_dir: Path, source: str) -> DataSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: `data` must be a mapping with keys train, eval, …; got {raw!r}")
    spec = _build(DataSpec, raw, f"{source}: data")
    for key in ("train", "eval"):
        value = getattr(spec, key)
        if value is None:
            continue
        path = _resolve_path(value, base_dir)
        if not path.exists():
            raise DataError(f"{source}: data.{key} `{value}` not found (looked for `{path}`)")
        setattr(spec, key, os.path.abspath(path))
    return spec


def _build(cls: type, values: dict[str, Any], source: str) -> Any:
    """`build_config` with the recipe's messages: `source: unknown key `k`; allowed: …`, `source: `k` must …`."""
    allowed = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = sorted(set(map(str, values)) - set(allowed))
    if unknown:
        raise ConfigError(f"{source}: unknown key `{unknown[0]}`; allowed: {', '.join(allowed)}")
    try:
        return build_config(cls, values, source=source)
    except ConfigError as err:  # a config's own validation does not know where it was written
        message = str(err)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None


def _split(stage_cls: type, inner_cls: type, values: dict[str, Any], source: str) -> tuple[dict, dict]:
    """Split a flat stage mapping into the recipe's own keys and the inner config's keys (unknown: an error)."""
    own = {f.name for f in dataclasses.fields(stage_cls) if f.name != "config"}
    inner = {f.name for f in dataclasses.fields(inner_cls) if f.init}
    unknown = sorted(set(map(str, values)) - own - inner)
    if unknown:
        raise ConfigError(f"{source}: unknown key `{unknown[0]}`; allowed: {', '.join(sorted(own | inner))}")
    return {k: v for k, v in values.items() if k in own}, {k: v for k, v in values.items() if k in inner}


def _parse_analyse(values: dict[str, Any], source: str, base_dir: Path) -> AnalyseStage:
    from compressor.sensitivity.config import AnalyseConfig

    return AnalyseStage(config=_build(AnalyseConfig, values, source))


def _parse_finetune(values: dict[str, Any], source: str, base_dir: Path) -> FinetuneStage:
    import compressor.methods  # noqa: F401  (registers every method)
    from compressor.methods.base import METHODS
    from compressor.train.config import TrainConfig

    allowed = ("method", "options", "train")
    unknown = sorted(set(map(str, values)) - set(allowed))
    if unknown:
        raise ConfigError(f"{source}: unknown key `{unknown[0]}`; allowed: {', '.join(allowed)}")
    method = values.get("method", "full")
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError(f"{source}: unknown method `{method}`; allowed: {', '.join(METHODS.names())}")
    options, train = values.get("options") or {}, values.get("train") or {}
    for key, value in (("options", options), ("train", train)):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: `{key}` must be a mapping; got {value!r}")
    return FinetuneStage(
        method=method,
        options=_build(METHODS.get(method).config_cls, options, f"{source} options (method {method})"),
        train=_build(TrainConfig, train, f"{source} train"),
    )


def _parse_merge(values: dict[str, Any], source: str, base_dir: Path) -> MergeStage:
    stage = _build(MergeStage, values, source)
    if not stage.atol > 0:
        raise ConfigError(f"{source}: `atol` must be positive; got {stage.atol!r}")
    return stage


def _parse_prune(values: dict[str, Any], source: str, base_dir: Path) -> PruneStage:
    from compressor.prune.config import PruneConfig

    own, inner = _split(PruneStage, PruneConfig, values, source)
    plan = inner.get("plan")
    if isinstance(plan, str) and plan != PLAN_FROM_ANALYSE:
        path = _resolve_path(plan, base_dir)
        if not path.is_file():
            raise ConfigError(
                f"{source}: plan `{plan}` not found (looked for `{path}`); give a plan.json or "
                f"`{PLAN_FROM_ANALYSE}` (the analyse stage's plan)"
            )
        inner["plan"] = os.path.abspath(path)
    stage = _build(PruneStage, own, source)
    stage.config = _build(PruneConfig, inner, source)
    if stage.config.plan is None and not (stage.config.heads or stage.config.ffn):
        raise ConfigError(f"{source}: give `plan` (a plan.json or `{PLAN_FROM_ANALYSE}`) or `heads`/`ffn` fractions")
    return stage


def _parse_export(values: dict[str, Any], source: str, base_dir: Path) -> ExportStage:
    from exporters.onnx.config import ExportConfig

    return ExportStage(config=_build(ExportConfig, values, source))


def _parse_benchmark(values: dict[str, Any], source: str, base_dir: Path) -> BenchmarkStage:
    from exporters.measure import BenchmarkConfig

    own, inner = _split(BenchmarkStage, BenchmarkConfig, values, source)
    stage = _build(BenchmarkStage, own, source)
    bad = [b for b in stage.baselines if b not in BASELINES]
    if bad or len(set(stage.baselines)) != len(stage.baselines):
        raise ConfigError(f"{source}: `baselines` must be a subset of {', '.join(BASELINES)}; got {stage.baselines!r}")
    stage.config = _build(BenchmarkConfig, inner, source)
    return stage


_PARSERS = {
    "analyse": _parse_analyse,
    "finetune": _parse_finetune,
    "merge": _parse_merge,
    "prune": _parse_prune,
    "export": _parse_export,
    "benchmark": _parse_benchmark,
}


# --- whole-recipe checks ------------------------------------------------------------------------------------------


def check_order(recipe: Recipe, source: str) -> None:
    """Each stage at most once, in pipeline order; analyse may come first or right after merge."""
    kinds = [s.kind for s in recipe.stages]
    for kind in STAGES:
        if kinds.count(kind) > 1:
            raise ConfigError(f"{source}: stage `{kind}` appears {kinds.count(kind)} times; each stage runs once")
    chain = [k for k in kinds if k != "analyse"]
    order = [k for k in STAGES if k != "analyse"]
    if chain != sorted(chain, key=order.index):
        raise ConfigError(f"{source}: stages must run in the order {' → '.join(STAGES)}; got {' → '.join(kinds)}")
    where = {k: i for i, k in enumerate(kinds)}
    if "merge" in where and where.get("finetune", 10**6) != where["merge"] - 1:
        raise ConfigError(f"{source}: `merge` folds a fine-tuning run: it must directly follow `finetune`")
    if "finetune" in where and where["finetune"] < len(kinds) - 1 and "merge" not in where:
        raise ConfigError(
            f"{source}: `finetune` writes an adapter; add a `merge` stage right after it so "
            f"{kinds[where['finetune'] + 1]} gets a plain checkpoint"
        )
    if "analyse" in where:
        later = [k for k in ("prune", "export") if k in where and where[k] < where["analyse"]]
        if later:
            raise ConfigError(f"{source}: `analyse` must come before `{later[0]}` (it scores the model to prune)")
    prune = recipe.stage("prune")
    if prune is not None and prune.config.plan == PLAN_FROM_ANALYSE:
        analyse = recipe.stage("analyse")
        if analyse is None:
            raise ConfigError(f"{source}: prune `plan: {PLAN_FROM_ANALYSE}` needs an `analyse` stage")
        if analyse.config.budget is None:
            raise ConfigError(f"{source}: prune `plan: {PLAN_FROM_ANALYSE}` needs a `budget` in the analyse stage")
    if "benchmark" in where and "export" not in where:
        raise ConfigError(f"{source}: `benchmark` compares exported artifacts; add an `export` stage before it")


def check_data_needs(recipe: Recipe, source: str) -> None:
    """Stages that train or score need `data.train`."""
    needs = []
    for stage in recipe.stages:
        if stage.kind == "finetune":
            needs.append("finetune")
        elif stage.kind == "analyse" and stage.config.scorer != "magnitude":
            needs.append(f"analyse (scorer {stage.config.scorer})")
        elif stage.kind == "prune" and (stage.config.recover != "none" or stage.vocab):
            needs.append("prune (recovery or vocabulary)")
    if needs and recipe.data.train is None:
        raise ConfigError(f"{source}: {needs[0]} needs training data: set `data.train`")
