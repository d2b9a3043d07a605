"""Checkpoints that ask to run their own code: refused before anything loads; nothing runs, nothing is copied."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.robustness.harness import Cli, expect_refusal


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Cli:
    return Cli(monkeypatch, capsys)


def _with_code(ckpt: Path, target: Path, *, auto_map: str | None) -> Path:
    """A copy of `ckpt` with a code file that would leave a marker if it ever ran, and optionally an `auto_map`."""
    shutil.copytree(ckpt, target)
    (target / "evil.py").write_text(f"open({str(target / 'RAN')!r}, 'w').write('ran')\n", encoding="utf-8")
    if auto_map is not None:
        config = target / auto_map
        data = json.loads(config.read_text(encoding="utf-8"))
        data["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None], "AutoConfig": "evil.EvilConfig"}
        config.write_text(json.dumps(data), encoding="utf-8")
    return target


@pytest.mark.parametrize("where", ["tokenizer_config.json", "config.json"])
def test_auto_map_is_refused_without_asking(cli: Cli, ckpt: Path, tmp_path: Path, where: str) -> None:
    evil = _with_code(ckpt, tmp_path / "evil", auto_map=where)
    out = tmp_path / "out"
    result = cli("prune", evil, "--heads", "0.25", "--out", out, "-q", stdin="y\n")
    expect_refusal(
        result,
        case=f"checkpoint whose {where} maps to its own code (`auto_map`), with `y` on stdin",
        code=1,
        problem="auto_map",
        fix="never runs checkpoint code",
        out=out,
    )
    assert not (evil / "RAN").exists()


def test_python_files_in_a_checkpoint_are_refused(cli: Cli, ckpt: Path, tmp_path: Path) -> None:
    evil = _with_code(ckpt, tmp_path / "evil", auto_map=None)
    out = tmp_path / "out"
    result = cli("export", evil, "--out", out, "-q")
    expect_refusal(
        result,
        case="checkpoint directory holding .py files",
        code=1,
        problem="contains Python code (evil.py)",
        fix="remove the .py files",
        out=out,
    )
    assert not (evil / "RAN").exists()
