"""Property tests of the parsers of user files on the training side: recipe YAML, `--set` overrides, plan.json, and a
fine-tuning run's method.json / base.json / labels.json (what `merge` reads).

Thousands of generated and mutated inputs in all; the only allowed outcomes are success or a `CompressorError`
(exit 1 or 2 at the CLI boundary, one line), never another exception.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from compressor.errors import CompressorError
from compressor.methods.base import METHODS
from compressor.schema import config_from_dict, config_to_dict
from compressor.sensitivity.plan import Plan
from compressor.stages.recipe import load_recipe, parse_recipe
from tests.models import write_tiny_data

FAST = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

EDGE = [0, 1, -1, 2**31, 2**63, 10**40, 0.5, 1e-4, 1e300, float("nan"), float("inf"), True, False, None, "", "x"]
EDGE += ["none", "analyse", "train", "minilm", "../x", "/etc", "a\x00b", "flops=0.5", "params=2", "latency-ms=0"]
scalars = st.one_of(st.sampled_from(EDGE), st.integers(), st.floats(), st.text(max_size=10), st.booleans())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)

RECIPE = {
    "version": 2,
    "name": "t",
    "model": "minilm",
    "data": {"train": "train.tsv", "eval": "val.tsv", "max_train_samples": 20},
    "stages": [
        {"analyse": {"scorer": "magnitude", "budget": "params=0.7"}},
        {"finetune": {"method": "lora", "options": {"rank": 4}, "train": {"lr": 1e-4, "max_steps": 3}}},
        "merge",
        {"prune": {"plan": "analyse", "recover_steps": 5}},
        {"export": {"name": "small", "quantize": "dynamic", "fuse": "off"}},
        {"benchmark": {"runs": 5}},
    ],
}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipes")
    write_tiny_data(path / "train.tsv", 10)
    write_tiny_data(path / "val.tsv", 6)
    return path


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path inside a nested mapping/list (where a mutation can land)."""
    found = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


def _mutate(raw: Any, path: tuple, action: str, value: Any) -> Any:
    raw = copy.deepcopy(raw)
    if not path:
        return value
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return raw


@st.composite
def mutated_recipes(draw: st.DrawFn) -> Any:
    raw = RECIPE
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(raw)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete"])) if path else "replace"
        raw = _mutate(raw, path, action, draw(values))
    return raw


def _parses_or_refuses(call: Any) -> None:
    try:
        call()
        event("accepted")
    except CompressorError as err:
        assert "\n" not in " ".join(str(err).split()), err  # the CLI prints it on one line
        event(type(err).__name__)


@FAST
@given(raw=mutated_recipes())
def test_mutated_recipes_parse_or_refuse(base_dir: Path, raw: Any) -> None:
    if not isinstance(raw, dict):
        return _parses_or_refuses(lambda: load_recipe_text(base_dir, yaml.safe_dump(raw)))
    _parses_or_refuses(lambda: parse_recipe(raw, base_dir=base_dir, source="recipe"))


def load_recipe_text(base_dir: Path, text: str | bytes) -> Any:
    path = base_dir / "fuzz.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return load_recipe(path)


@FAST
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_recipe_file_parses_or_refuses(base_dir: Path, text: str | bytes) -> None:
    _parses_or_refuses(lambda: load_recipe_text(base_dir, text))


@FAST
@given(
    overrides=st.lists(
        st.one_of(
            st.text(max_size=30),
            st.builds(
                lambda k, v: f"{k}={v}",
                st.sampled_from(
                    [
                        "prune.heads",
                        "finetune.train.lr",
                        "small.quantize",
                        "data.train",
                        "model",
                        "merge.atol",
                        "analyse",
                        "x.y.z",
                        "finetune.options.rank",
                        "name",
                        "stages",
                    ]
                ),
                st.one_of(st.text(max_size=12), st.sampled_from([str(v) for v in EDGE])),
            ),
        ),
        max_size=3,
    )
)
def test_overrides_apply_or_refuse(base_dir: Path, overrides: list[str]) -> None:
    path = base_dir / "good.yaml"
    path.write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    _parses_or_refuses(lambda: load_recipe(path, overrides))


PLAN = {
    "kind": "compressor-plan",
    "version": 1,
    "scorer": "fisher",
    "budget": {"metric": "params", "value": 0.5},
    "model": {
        "model_type": "bert",
        "hidden_size": 32,
        "head_size": 8,
        "num_layers": 2,
        "heads": [4, 4],
        "intermediate": [37, 37],
    },
    "min_heads": 1,
    "min_neurons": 1,
    "layers": [
        {"index": 0, "source": 0, "heads": [0, 1], "neurons": [0, 1, 2], "dropped": False},
        {"index": 1, "source": 1, "heads": [3], "neurons": [5], "dropped": False},
    ],
    "predicted": {},
}


@st.composite
def mutated_plans(draw: st.DrawFn) -> Any:
    raw = PLAN
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(raw)))
        action = draw(st.sampled_from(["replace", "delete"])) if path else "replace"
        raw = _mutate(raw, path, action, draw(values))
    return raw


@FAST
@given(raw=mutated_plans())
def test_mutated_plans_load_or_refuse(raw: Any) -> None:
    _parses_or_refuses(lambda: Plan.from_dict(raw, source="plan"))


@FAST
@given(data=st.binary(max_size=300))
def test_any_plan_file_loads_or_refuses(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-plan.json"
    path.write_bytes(data)
    _parses_or_refuses(lambda: Plan.load(path))


@FAST
@given(name=st.sampled_from(sorted(METHODS.names())), path_action=st.data())
def test_mutated_method_configs_load_or_refuse(name: str, path_action: st.DataObject) -> None:
    cls = METHODS.get(name).config_cls
    raw = config_to_dict(cls())
    for _ in range(path_action.draw(st.integers(1, 2))):
        path = path_action.draw(st.sampled_from(_paths(raw)))
        action = path_action.draw(st.sampled_from(["replace", "delete"])) if path else "replace"
        raw = _mutate(raw, path, action, path_action.draw(values))
    _parses_or_refuses(lambda: config_from_dict(cls, raw, source="method.json"))


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real fine-tuning output (tiny model, 2 LoRA steps): what `merge` reads."""
    from compressor.methods.lora import LoraConfig
    from compressor.stages.base import STAGES, Context
    from compressor.stages.context import DataFiles, DataSpec
    from compressor.stages.finetune import FinetuneConfig
    from compressor.train.config import TrainConfig
    from tests.models import save_tiny_checkpoint

    base = tmp_path_factory.mktemp("run")
    ckpt = save_tiny_checkpoint(base / "ckpt")
    data = DataFiles(DataSpec(train=str(write_tiny_data(base / "train.tsv", 16))))
    config = FinetuneConfig(method="lora", options=LoraConfig(rank=2), train=TrainConfig(max_steps=2, batch_size=8))
    STAGES.get("finetune").run(Context(out=base / "adapter", data=data, model=str(ckpt), quiet=True), config)
    return base / "adapter"


@SLOW
@given(
    file=st.sampled_from(["method.json", "base.json", "labels.json"]),
    content=st.one_of(values.map(lambda v: json.dumps(v, allow_nan=True)), st.binary(max_size=100)),
)
def test_damaged_run_files_merge_or_refuse(
    adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory, file: str, content: Any
) -> None:
    from compressor.stages.finetune import load_adapter_dir

    work = tmp_path_factory.getbasetemp() / "fuzz-run"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(adapter_dir, work)
    (work / file).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    _parses_or_refuses(lambda: load_adapter_dir(work))
