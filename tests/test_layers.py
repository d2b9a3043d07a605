"""The layer contracts are enforced: `lint-imports` passes on the tree, and fails on a deliberate layer violation
that also closes an import cycle (a copy of the packages where the architecture table imports the runner)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in ("compressor", "cli", "exporters"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_a_layer_violation_and_a_cycle_break_the_lint(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    table = tree / "compressor" / "arch" / "table.py"
    bad = "\nfrom compressor.stages.runner import run_pipeline  # noqa: E402, F401\n"
    table.write_text(table.read_text(encoding="utf-8") + bad, encoding="utf-8")
    result = _lint(tree)
    assert result.returncode != 0
    assert "layers BROKEN" in result.stdout
    assert "no import cycles, at any depth BROKEN" in result.stdout
    assert "compressor.arch.table -> compressor.stages.runner" in result.stdout
