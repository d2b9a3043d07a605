from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from compressor.errors import ConfigError, DataError, ModelError
from compressor.methods.base import METHODS
from compressor.recipe import STAGES, apply_overrides, load_recipe, parse_recipe, parse_yaml
from tests.models import write_tiny_data

SAMPLES = sorted((Path(__file__).parents[2] / "samples" / "recipes").glob("*.yaml"))

GOOD = """
name: t
model: minilm
data: {train: train.tsv, eval: val.tsv, max_train_samples: 20}
stages:
  - analyse: {scorer: magnitude, budget: params=0.7}
  - finetune: {method: lora, options: {rank: 4}, train: {lr: 1e-4, max_steps: 3}}
  - merge
  - prune: {plan: analyse, recover_steps: 5}
  - export: {quantize: dynamic, fuse: "off"}
  - benchmark: {runs: 5, baselines: [fp32]}
"""


def write(tmp_path: Path, text: str) -> Path:
    write_tiny_data(tmp_path / "train.tsv", 10)
    write_tiny_data(tmp_path / "val.tsv", 6)
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def edited(**changes: object) -> str:
    """GOOD with top-level keys replaced (None removes a key)."""
    raw = yaml.safe_load(GOOD)
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    return yaml.safe_dump(raw)


def test_samples_exist_for_every_method() -> None:
    assert SAMPLES
    methods = set()
    for path in SAMPLES:
        recipe = load_recipe(path)
        if recipe.stage("finetune") is not None:
            methods.add(recipe.stage("finetune").method)
    assert set(METHODS.names()) <= methods
    assert "minilm-sst2-fast.yaml" in {p.name for p in SAMPLES}


def test_demo_recipe_settings() -> None:
    recipe = load_recipe(SAMPLES[0].parent / "minilm-sst2-fast.yaml")
    assert [s.kind for s in recipe.stages] == ["finetune", "merge", "prune", "export", "benchmark"]
    ft, prune, bench = recipe.stage("finetune"), recipe.stage("prune"), recipe.stage("benchmark")
    assert (ft.method, ft.train.lr, ft.train.epochs, recipe.data.max_train_samples) == ("full", 1e-4, 1.0, 2000)
    assert (prune.config.heads, prune.config.ffn, prune.config.recover_steps) == (0.5, 0.5, 120)
    assert recipe.stage("export").config.quantize == "dynamic"
    assert (bench.config.batch, bench.config.seq_len, bench.config.threads, bench.baselines) == (
        1,
        128,
        2,
        ["fp32", "int8"],
    )
    assert Path(recipe.data.eval).name == "validation.tsv" and Path(recipe.data.eval).is_file()


def test_good_recipe_resolves(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    assert [s.kind for s in recipe.stages] == list(STAGES[:1]) + ["finetune", "merge", "prune", "export", "benchmark"]
    assert recipe.stage("finetune").options.rank == 4
    assert recipe.stage("finetune").train.lr == pytest.approx(1e-4)  # `1e-4` is a float, not YAML 1.1's string
    assert recipe.data.train == str(tmp_path / "train.tsv")  # relative to the recipe file
    assert recipe.stage("benchmark").baselines == ["fp32"]
    assert recipe.source == (tmp_path / "recipe.yaml").resolve()


def test_resolved_recipe_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    again = parse_recipe(recipe.to_dict(), base_dir=Path("/nonexistent"), source="again")
    assert again.to_dict() == recipe.to_dict()


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        (GOOD.replace("- merge", "- merj"), ConfigError, "unknown stage `merj`; allowed: analyse, finetune, merge"),
        (GOOD.replace("runs: 5", "rnus: 5"), ConfigError, "unknown key `rnus`; allowed: baselines, batch"),
        (GOOD.replace("rank: 4", "rnak: 4"), ConfigError, "unknown key `rnak`; allowed: alpha, dropout, rank"),
        (GOOD.replace("max_steps: 3", "max_step: 3"), ConfigError, "unknown key `max_step`"),
        (GOOD + "extra: 1\n", ConfigError, "unknown key `extra`; allowed: version, name"),
        (GOOD.replace("recover_steps: 5", "recover_steps: many"), ConfigError, "`recover_steps` must be an integer"),
        (GOOD.replace("budget: params=0.7", "budget: params=7"), ConfigError, "stage `analyse`: `budget`: params is"),
        (GOOD.replace("method: lora", "method: lorra"), ConfigError, "unknown method `lorra`"),
        (GOOD.replace("baselines: [fp32]", "baselines: [fp16]"), ConfigError, "`baselines` must be a subset"),
        (GOOD.replace("train: train.tsv", "train: nope.tsv"), DataError, "data.train `nope.tsv` not found"),
        (GOOD.replace("model: minilm", "model: ./no-such-model"), ModelError, "model `./no-such-model` not found"),
        (GOOD.replace("stages:", "stages: 3\nx:"), ConfigError, "unknown key `x`"),
        (GOOD.replace("  - merge\n", ""), ConfigError, "add a `merge` stage"),
        (
            GOOD.replace("  - analyse: {scorer: magnitude, budget: params=0.7}\n", ""),
            ConfigError,
            "`plan: analyse` needs an `analyse` stage",
        ),
        (GOOD.replace('  - export: {quantize: dynamic, fuse: "off"}\n', ""), ConfigError, "add an `export` stage"),
        (GOOD + "  - merge\n", ConfigError, "stage `merge` appears 2 times"),
        (GOOD.replace("name: t", "name: t\nname: u"), ConfigError, "duplicate key `name`"),
        (GOOD.replace("data: {", "data: {{"), ConfigError, "not valid YAML (line"),
        ("", ConfigError, "is empty"),
    ],
)
def test_bad_recipes_fail_with_one_line(tmp_path: Path, text: str, error: type, match: str) -> None:
    with pytest.raises(error) as info:
        load_recipe(write(tmp_path, text))
    message = str(info.value)
    assert match in message, message
    assert "\n" not in message


def test_stage_order_is_checked(tmp_path: Path) -> None:
    text = GOOD.replace('  - export: {quantize: dynamic, fuse: "off"}\n', "").replace(
        "  - analyse:", "  - export: {quantize: dynamic}\n  - analyse:"
    )
    with pytest.raises(ConfigError, match="order"):
        load_recipe(write(tmp_path, text))


def test_training_stages_need_train_data(tmp_path: Path) -> None:
    raw = yaml.safe_load(GOOD)
    raw["data"].pop("train")
    with pytest.raises(ConfigError, match="needs training data: set `data.train`"):
        load_recipe(write(tmp_path, yaml.safe_dump(raw)))


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recipe .* not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    recipe = load_recipe(
        path,
        [
            "prune.recover_steps=7",
            "finetune.train.lr=3e-5",
            "finetune.options.targets=[query, key]",
            "benchmark.baselines=[fp32, int8]",
            "export.quantize=none",
            "name=other",
            "data.max_train_samples=null",
            "merge.atol=0.001",
        ],
    )
    assert recipe.stage("prune").config.recover_steps == 7
    assert recipe.stage("finetune").train.lr == pytest.approx(3e-5)
    assert recipe.stage("finetune").options.targets == ["query", "key"]
    assert recipe.stage("benchmark").baselines == ["fp32", "int8"]
    assert recipe.stage("export").config.quantize == "none"
    assert recipe.stage("merge").atol == pytest.approx(1e-3)
    assert (recipe.name, recipe.data.max_train_samples) == ("other", None)


def test_override_paths_resolve_from_the_working_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "recipes", GOOD)
    write_tiny_data(tmp_path / "elsewhere" / "more.tsv", 8)
    monkeypatch.chdir(tmp_path / "elsewhere")
    recipe = load_recipe(path, ["data.train=more.tsv"])
    assert recipe.data.train == os.path.abspath(tmp_path / "elsewhere" / "more.tsv")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("prune.heads=abc", "`heads` must be a number"),
        ("vocab.keep=1", "unknown key `vocab`"),
        ("prune", "expected KEY=VALUE"),
        ("model.x=1", "`model` is a single value"),
        ("prune=1", "name a key inside `prune`"),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_recipe(write(tmp_path, GOOD), [override])


def test_override_of_a_stage_the_recipe_lacks() -> None:
    raw = {"model": "minilm", "stages": [{"finetune": {}}]}
    with pytest.raises(ConfigError, match="the recipe has no `prune` stage; its stages: finetune"):
        apply_overrides(raw, ["prune.heads=0.5"])
    assert apply_overrides({"stages": ["merge"]}, ["merge.atol=0.1"])["stages"] == [{"merge": {"atol": 0.1}}]


def test_yaml_scalars_are_yaml_1_2() -> None:
    assert parse_yaml("a: 1e-4\nb: 2E+3\nc: 10\nd: 1.5", source="t") == {"a": 1e-4, "b": 2000.0, "c": 10, "d": 1.5}
    # only true/false are booleans: `fuse: off` is the string "off", not False
    assert parse_yaml("a: off\nb: yes\nc: true\nd: False", source="t") == {
        "a": "off",
        "b": "yes",
        "c": True,
        "d": False,
    }
