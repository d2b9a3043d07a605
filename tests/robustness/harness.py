"""Run `compressor ...` through `cli.main.main` (the error boundary) and check what a user would see.

Every refusal goes through `expect_refusal`, which asserts the exit code, exactly one `Error:` line naming the
problem and the fix, no traceback, and no output left behind (neither `--out` nor a hidden `.NAME.*` sibling).
When `COMPRESSOR_ROBUSTNESS_LOG` names a file, each checked case is appended to it as a JSON line, with paths
made relative to the test's directory: `collect_messages.py` turns that log into docs/robustness.md.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.main import main

LOG_ENV = "COMPRESSOR_ROBUSTNESS_LOG"
USAGE_LINES = ("Usage:", "Try ")  # click's own usage errors print these before the `Error:` line


@dataclass
class Result:
    args: list[str]
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("Error:")]


class Cli:
    """Calls `main()` in this process (fast: torch is imported once) and captures exit code, stdout, stderr."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
        self.monkeypatch, self.capsys = monkeypatch, capsys

    def __call__(self, *args: object, stdin: str | None = None) -> Result:
        argv = [str(a) for a in args]
        self.capsys.readouterr()  # drop anything printed before
        self.monkeypatch.setattr(sys, "argv", ["compressor", *argv])
        if stdin is not None:
            self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = self.capsys.readouterr()
        return Result(argv, code, out, err)


def leftovers(out: Path) -> list[str]:
    """`out` itself and any hidden `.NAME.*` sibling (temporary, old or partial directories)."""
    found = [out.name] if out.exists() else []
    if out.parent.is_dir():
        found += sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))
    return found


def expect_refusal(
    result: Result,
    *,
    case: str,
    code: int,
    problem: str | Sequence[str],
    fix: str | Sequence[str],
    out: Path | None = None,
) -> str:
    """Assert a clean refusal and return the error line.

    Args:
        case: what the user did wrong, as it appears in docs/robustness.md.
        problem, fix: substrings the error line must contain (one of them, when a sequence).
        out: the `--out` of the command, which must not exist afterwards (nor its hidden siblings).
    """
    assert "Traceback" not in result.err, result.err
    assert result.code == code, f"exit {result.code}, expected {code}: {result.err}"
    lines = result.error_lines
    assert len(lines) == 1, result.err
    line = lines[0]
    others = [x for x in result.err.splitlines() if x.strip() and x != line and not x.startswith(USAGE_LINES)]
    assert not others, f"stderr has more than the error line: {result.err}"
    for what, needles in (("problem", problem), ("fix", fix)):
        options = [needles] if isinstance(needles, str) else list(needles)
        assert any(n in line for n in options), f"the error does not name the {what} ({options}): {line}"
    if out is not None:
        assert leftovers(Path(out)) == [], f"partial output left: {leftovers(Path(out))}"
    record(case, result, line)
    return line


def expect_success(result: Result, *, case: str, note: str) -> None:
    """Assert exit 0 and no traceback, and record the case (with what the user gets) for the docs."""
    assert "Traceback" not in result.err, result.err
    assert result.code == 0, result.err
    record(case, result, note)


_BASE: list[Path] = []  # pytest's base temporary directory, set by the conftest


def set_base(path: Path) -> None:
    _BASE[:] = [path]


def shorten(text: str) -> str:
    """Paths inside pytest's temporary tree become relative to their test directory (`/tmp/.../x0/ckpt` → `ckpt`)."""
    for base in _BASE:
        text = re.sub(re.escape(str(base)) + r"/[^/\s`']+/", "", text)  # a path inside a test's directory
        text = re.sub(re.escape(str(base)) + r"/[^/\s`']+", ".", text)  # the test's directory itself
    return text


def record(case: str, result: Result, message: str) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    entry = {
        "case": case,
        "command": "compressor " + " ".join(_quote(shorten(a)) for a in result.args),
        "exit": result.code,
        "message": shorten(message),
        "test": shorten(os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]),
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _quote(arg: str) -> str:
    if len(arg) > 40:
        arg = arg[:20] + "…" + arg[-8:]
    return f'"{arg}"' if (not arg or " " in arg) else arg
