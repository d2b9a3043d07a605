"""Recipes (version 2): parsed from the stage registry, named and repeatable stages, flow and data checks, `--set`
overrides by stage name, and version 1 recipes migrated on load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from compressor.errors import ConfigError, DataError, ModelError
from compressor.methods.base import METHODS
from compressor.stages import STAGES
from compressor.stages.recipe import load_recipe, parse_recipe, path_keys
from compressor.stages.recipe_text import apply_overrides, parse_yaml
from tests.models import write_tiny_data

SAMPLES = sorted((Path(__file__).parents[3] / "samples" / "recipes").glob("*.yaml"))

GOOD = """
version: 2
name: t
model: minilm
data: {train: train.tsv, eval: val.tsv, max_train_samples: 20}
stages:
  - analyse: {scorer: magnitude, budget: params=0.7}
  - finetune: {method: lora, options: {rank: 4}, train: {lr: 1e-4, max_steps: 3}}
  - merge
  - export: {name: dense, quantize: none}
  - prune: {plan: analyse, recover_steps: 5}
  - export: {name: small, quantize: dynamic, fuse: "off"}
  - benchmark: {runs: 5}
"""

# The demo recipe as version 1 wrote it: the dense baselines were a benchmark setting, `vocab: true` a flag.
V1_DEMO = """
version: 1
name: minilm-sst2-fast
model: minilm
data: {train: train.tsv, eval: val.tsv, max_train_samples: 2000}
stages:
  - finetune: {method: full, train: {lr: 1e-4, epochs: 1, batch_size: 32}}
  - merge: {}
  - prune: {heads: 0.5, ffn: 0.5, recover: distill, recover_steps: 120, vocab: true}
  - export: {quantize: dynamic, fuse: "off", threads: 2, eval_samples: 256}
  - benchmark: {baselines: [fp32, int8], threads: 2, batch: 1, seq_len: 128, runs: 50, plot: true}
"""


def write(tmp_path: Path, text: str) -> Path:
    write_tiny_data(tmp_path / "train.tsv", 10)
    write_tiny_data(tmp_path / "val.tsv", 6)
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def stages_of(text: str, stages: list) -> str:
    """GOOD with its `stages` replaced."""
    raw = yaml.safe_load(text)
    raw["stages"] = stages
    return yaml.safe_dump(raw, sort_keys=False)


def test_samples_exist_for_every_method() -> None:
    assert SAMPLES
    methods = set()
    for path in SAMPLES:
        recipe = load_recipe(path)
        assert recipe.to_dict()["version"] == 2
        methods |= {e.config.method for e in recipe.stages if e.stage.key == "finetune"}
    assert set(METHODS.names()) <= methods
    assert "minilm-sst2-fast.yaml" in {p.name for p in SAMPLES}


def test_demo_recipe_settings() -> None:
    recipe = load_recipe(SAMPLES[0].parent / "minilm-sst2-fast.yaml")
    assert [(e.name, e.stage.key) for e in recipe.stages] == [
        ("finetune", "finetune"),
        ("merge", "merge"),
        ("dense-fp32", "export"),
        ("dense-int8", "export"),
        ("prune", "prune"),
        ("compressed-int8", "export"),
        ("benchmark", "benchmark"),
    ]
    ft, prune, bench = (recipe.entry(n).config for n in ("finetune", "prune", "benchmark"))
    assert (ft.method, ft.train.lr, ft.train.epochs, recipe.data.max_train_samples) == ("full", 1e-4, 1.0, 2000)
    assert (prune.heads, prune.ffn, prune.recover_steps) == (0.5, 0.5, 120)
    quantize = {n: recipe.entry(n).config.quantize for n in ("dense-fp32", "dense-int8", "compressed-int8")}
    assert quantize == {"dense-fp32": "none", "dense-int8": "dynamic", "compressed-int8": "dynamic"}
    assert (bench.batch, bench.seq_len, bench.threads) == (1, 128, 2)
    assert Path(recipe.data.eval).name == "validation.tsv" and Path(recipe.data.eval).is_file()


def test_good_recipe_resolves(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    assert [e.name for e in recipe.stages] == ["analyse", "finetune", "merge", "dense", "prune", "small", "benchmark"]
    assert [e.stage for e in recipe.stages] == [
        STAGES.get(k) for k in ("analyse", "finetune", "merge", "export", "prune", "export", "benchmark")
    ]
    finetune = recipe.entry("finetune").config
    assert finetune.options.rank == 4 and type(finetune.options).kind == "lora"
    assert finetune.train.lr == pytest.approx(1e-4)  # `1e-4` is a float, not YAML 1.1's string
    assert recipe.data.train == str(tmp_path / "train.tsv")  # relative to the recipe file
    assert recipe.entry("prune").config.plan == "analyse" and recipe.entry("benchmark").config.runs == 5
    assert recipe.entry("dense").config.quantize == "none" and recipe.entry("nope") is None
    assert recipe.source == (tmp_path / "recipe.yaml").resolve()


def test_resolved_recipe_round_trips(tmp_path: Path) -> None:
    for text in (GOOD, V1_DEMO):
        recipe = load_recipe(write(tmp_path, text))
        again = parse_recipe(recipe.to_dict(), base_dir=Path("/nonexistent"), source="again")
        assert again.to_dict() == recipe.to_dict()


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (
            GOOD.replace("- merge", "- merj"),
            ConfigError,
            "unknown stage `merj`; allowed: analyse, benchmark, export, finetune, merge, prune",
        ),
        (GOOD.replace("runs: 5", "rnus: 5"), ConfigError, "stage `benchmark`: unknown key `rnus`; allowed: batch, "),
        (GOOD.replace("rank: 4", "rnak: 4"), ConfigError, "unknown key `rnak`; allowed: alpha, dropout, rank"),
        (GOOD.replace("max_steps: 3", "max_step: 3"), ConfigError, "unknown key `max_step`"),
        (GOOD + "extra: 1\n", ConfigError, "unknown key `extra`; allowed: version, name, description, model"),
        (GOOD.replace("recover_steps: 5", "recover_steps: many"), ConfigError, "`recover_steps` must be an integer"),
        (GOOD.replace("budget: params=0.7", "budget: params=7"), ConfigError, "stage `analyse`: `budget`: params is"),
        (GOOD.replace("method: lora", "method: lorra"), ConfigError, "unknown method `lorra`; allowed: adamix, dsee"),
        (GOOD.replace("train: train.tsv", "train: nope.tsv"), DataError, "data.train `nope.tsv` not found"),
        (GOOD.replace("model: minilm", "model: ./no-such-model"), ModelError, "model `./no-such-model` not found"),
        (GOOD.replace("stages:", "stages: 3\nx:"), ConfigError, "unknown key `x`"),
        (GOOD + "  - merge\n", ConfigError, "stage `merge` appears twice; each stage runs once"),
        (GOOD.replace("name: small", "name: dense"), ConfigError, "stage `dense` appears twice; give each a distinct"),
        (GOOD.replace("name: small", "name: Small"), ConfigError, "`name` must be lower-case letters, digits and"),
        (GOOD.replace("version: 2", "version: 3"), ConfigError, "recipe version 3 is newer than this compressor"),
        (GOOD.replace("version: 2", "version: two"), ConfigError, "`version` must be a positive integer; got 'two'"),
        (GOOD.replace("runs: 5", "runs: 5, baselines: [fp32]"), ConfigError, "unknown key `baselines`"),  # v1 only
        (GOOD.replace("name: t", "name: t\nname: u"), ConfigError, "duplicate key `name`"),
        (GOOD.replace("data: {", "data: {{"), ConfigError, "not valid YAML (line"),
        ("", ConfigError, "is empty; it needs at least `model` and `stages`"),
    ],
)
def test_bad_recipes_fail_with_one_line(tmp_path: Path, text: str, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        load_recipe(write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        (["merge"], "stage `merge` reads an adapter: add a `finetune` stage before it"),
        (
            [{"prune": {"plan": "analyse"}}, {"export": {}}],
            "stage `prune` reads the plan of an analysis (`plan: analyse`): add an `analyse` stage before it",
        ),
        (
            [{"analyse": {"scorer": "magnitude"}}, {"benchmark": {}}],
            "stage `benchmark` reads exported artifacts: add an `export`",
        ),
        (
            [{"finetune": {"method": "lora"}}, {"export": {"name": "early"}}],
            "stage `early` reads a model, but `finetune` left it unmerged: add a `merge` stage right after `finetune`",
        ),
        (
            [{"finetune": {}}, {"analyse": {}}, "merge"],
            "stage `analyse` reads a model, but `finetune` left it unmerged: add a `merge` stage right after "
            "`finetune`",
        ),
    ],
)
def test_flow_is_checked(tmp_path: Path, stages: list, message: str) -> None:
    """Each stage must find what it reads: an adapter to merge, a plan, artifacts to compare, a merged model."""
    path = write(tmp_path, stages_of(GOOD, stages))
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_flow_follows_the_slots(tmp_path: Path) -> None:
    # the recipe's model fills `model`; a plan made before fine-tuning still drives the prune after the merge
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.entry("prune").stage.needs(recipe.entry("prune").config) == ("model", "plan")
    # a benchmark reads every artifact exported before it; an export after it is fine (nothing reads it)
    text = stages_of(GOOD, [{"export": {"name": "a"}}, {"benchmark": {}}, {"export": {"name": "b"}}])
    assert [e.name for e in load_recipe(write(tmp_path, text)).stages] == ["a", "benchmark", "b"]


def test_training_stages_need_train_data(tmp_path: Path) -> None:
    raw = yaml.safe_load(GOOD)
    raw["data"].pop("train")
    path = write(tmp_path, yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}: stage `finetune` needs training data: set `data.train`"
    raw["stages"] = [{"analyse": {"scorer": "magnitude"}}, {"export": {}}]  # neither needs training data
    assert len(load_recipe(write(tmp_path, yaml.safe_dump(raw))).stages) == 2


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_recipe(tmp_path / "nope.yaml")
    assert str(info.value) == (
        f"recipe `{tmp_path / 'nope.yaml'}` not found; pass a recipe YAML file (examples in samples/recipes/)"
    )


def test_v1_recipe_is_migrated_to_explicit_baseline_exports(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, V1_DEMO))
    assert [(e.name, e.stage.key) for e in recipe.stages] == [
        ("finetune", "finetune"),
        ("merge", "merge"),
        ("dense-fp32", "export"),  # the baselines: the merged model, exported before the first prune or export
        ("dense-int8", "export"),
        ("prune", "prune"),
        ("export", "export"),
        ("benchmark", "benchmark"),
    ]
    dense_fp32, dense_int8, export = (recipe.entry(n).config for n in ("dense-fp32", "dense-int8", "export"))
    assert (dense_fp32.quantize, dense_int8.quantize, export.quantize) == ("none", "dynamic", "dynamic")
    for config in (dense_fp32, dense_int8):  # the rest of the export's settings carry over to the baselines
        assert (config.fuse, config.threads, config.eval_samples) == ("off", 2, 256)
    assert recipe.entry("prune").config.vocab == "train"  # `vocab: true`
    assert recipe.entry("benchmark").config.runs == 50
    assert recipe.to_dict()["version"] == 2
    # --set addresses the migrated stages by their new names
    recipe = load_recipe(tmp_path / "recipe.yaml", ["dense-int8.eval_samples=8"])
    assert (
        recipe.entry("dense-int8").config.eval_samples == 8 and recipe.entry("dense-fp32").config.eval_samples == 256
    )


@pytest.mark.parametrize(
    ("benchmark", "exports"),
    [
        ("{baselines: [fp32]}", ["dense-fp32", "export"]),
        ("{baselines: []}", ["export"]),
        ("{runs: 5}", ["dense-fp32", "dense-int8", "export"]),  # v1's default: both baselines
    ],
)
def test_v1_baselines_become_exports(tmp_path: Path, benchmark: str, exports: list[str]) -> None:
    text = V1_DEMO.replace(V1_DEMO.split("  - benchmark: ")[1], benchmark + "\n")
    recipe = load_recipe(write(tmp_path, text))
    assert [e.name for e in recipe.stages if e.stage.key == "export"] == exports


@pytest.mark.parametrize("baselines", ["[fp16]", "fp32"])
def test_v1_bad_baselines_are_refused(tmp_path: Path, baselines: str) -> None:
    text = V1_DEMO.replace("baselines: [fp32, int8]", f"baselines: {baselines}")
    with pytest.raises(ConfigError, match="baselines"):
        load_recipe(write(tmp_path, text))


def test_overrides_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    recipe = load_recipe(
        path,
        [
            "prune.recover_steps=7",
            "finetune.train.lr=3e-5",
            "finetune.options.targets=[query, key]",
            "small.quantize=none",
            "dense.eval_samples=8",
            "benchmark.runs=9",
            "name=other",
            "data.max_train_samples=null",
            "merge.atol=0.001",
        ],
    )
    assert recipe.entry("prune").config.recover_steps == 7
    assert recipe.entry("finetune").config.train.lr == pytest.approx(3e-5)
    assert recipe.entry("finetune").config.options.targets == ["query", "key"]
    assert recipe.entry("small").config.quantize == "none" and recipe.entry("dense").config.eval_samples == 8
    assert recipe.entry("dense").config.quantize == "none" and recipe.entry("small").config.eval_samples == 500
    assert recipe.entry("benchmark").config.runs == 9
    assert recipe.entry("merge").config.atol == pytest.approx(1e-3)
    assert (recipe.name, recipe.data.max_train_samples) == ("other", None)


def test_override_paths_resolve_from_the_working_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "recipes", GOOD)
    write_tiny_data(tmp_path / "elsewhere" / "more.tsv", 8)
    monkeypatch.chdir(tmp_path / "elsewhere")
    recipe = load_recipe(path, ["data.train=more.tsv", "prune.vocab=more.tsv"])
    assert recipe.data.train == os.path.abspath(tmp_path / "elsewhere" / "more.tsv")
    assert recipe.entry("prune").config.vocab == str((tmp_path / "elsewhere" / "more.tsv").resolve())
    recipe = load_recipe(path, ["prune.vocab=train"])  # the word, not a file `train` in the working directory
    assert recipe.entry("prune").config.vocab == "train"


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("prune.heads=abc", ConfigError, "`heads` must be a number"),
        (
            "vocab.keep=1",
            ConfigError,
            "--set vocab.keep: unknown key `vocab`; allowed: version, name, description, model, data, or a stage of "
            "the recipe: analyse, finetune, merge, dense, prune, small, benchmark",
        ),
        ("export.quantize=none", ConfigError, "--set export.quantize: unknown key `export`"),  # exports go by name
        ("prune", ConfigError, "--set: expected KEY=VALUE (e.g. prune.heads=0.3); got 'prune'"),
        ("model.x=1", ConfigError, "--set model.x: `model` is a single value; use --set model=VALUE"),
        ("prune=1", ConfigError, "--set prune: name a key inside `prune`, e.g. prune.KEY=VALUE"),
        ("prune.vocab=missing.tsv", ConfigError, "vocab `"),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        load_recipe(write(tmp_path, GOOD), [override])
    assert message in str(info.value)


def test_override_of_a_stage_the_recipe_lacks() -> None:
    raw = {"model": "minilm", "stages": [{"finetune": {}}]}
    with pytest.raises(ConfigError) as info:
        apply_overrides(raw, ["prune.heads=0.5"], path_keys)
    assert str(info.value) == (
        "--set prune.heads: unknown key `prune`; allowed: version, name, description, model, data, or a stage of the "
        "recipe: finetune"
    )
    assert apply_overrides({"stages": ["merge"]}, ["merge.atol=0.1"], path_keys)["stages"] == [
        {"merge": {"atol": 0.1}}
    ]


def test_yaml_scalars_are_yaml_1_2() -> None:
    assert parse_yaml("a: 1e-4\nb: 2E+3\nc: 10\nd: 1.5", source="t") == {"a": 1e-4, "b": 2000.0, "c": 10, "d": 1.5}
    # only true/false are booleans: `fuse: off` is the string "off", not False
    assert parse_yaml("a: off\nb: yes\nc: true\nd: False", source="t") == {
        "a": "off",
        "b": "yes",
        "c": True,
        "d": False,
    }
