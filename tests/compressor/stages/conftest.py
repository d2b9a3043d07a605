"""Tiny inputs for the stage tests, and one tiny run of every stage, shared by the runner and registry tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.models import tiny_pipeline_inputs

FAST_EXPORT = {"fuse": "off", "eval_samples": 8, "timing_runs": 2, "threads": 1}
FINETUNE = {"finetune": {"method": "full", "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-3, "save_steps": 1}}}
# Every registered stage, the dense baselines exported explicitly before the prune (as the sample recipes do).
FULL = [
    FINETUNE,
    {"merge": {}},
    {"analyse": {"scorer": "head-gradient", "budget": "params=0.6", "samples": 16}},
    {"export": {"name": "dense-fp32", "quantize": "none", **FAST_EXPORT}},
    {"export": {"name": "dense-int8", "quantize": "dynamic", **FAST_EXPORT}},
    {"prune": {"plan": "analyse", "recover_steps": 2, "batch_size": 8}},
    {"export": {"name": "compressed-int8", "quantize": "dynamic", **FAST_EXPORT}},
    {"benchmark": {"runs": 3, "warmup": 1, "threads": 1}},
]


@pytest.fixture(scope="package")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny checkpoint (integer label names, like SST-2's files) and tiny train / validation files."""
    root = tmp_path_factory.mktemp("pipeline")
    return tiny_pipeline_inputs(root)


def recipe_file(tmp_path: Path, tiny: dict[str, Path], stages: list) -> Path:
    """A version-2 recipe of `stages` on the tiny checkpoint and data, written to `tmp_path/recipe.yaml`."""
    raw = {
        "version": 2,
        "name": "tiny",
        "model": str(tiny["model"]),
        "data": {"train": str(tiny["train"]), "eval": str(tiny["eval"])},
        "stages": stages,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="package")
def full_run(tmp_path_factory: pytest.TempPathFactory, tiny: dict[str, Path]):  # noqa: ANN201
    """`run_pipeline` of FULL into a fresh directory (a RunResult)."""
    from compressor.stages.runner import run_pipeline

    root = tmp_path_factory.mktemp("full-run")
    return run_pipeline(recipe_file(root, tiny, FULL), root / "run", quiet=True)
