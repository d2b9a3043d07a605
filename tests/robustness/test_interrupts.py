"""Interruptions, in real subprocesses: Ctrl-C (SIGINT) during fine-tuning and during export, and SIGKILL during
export. Either the old state or the new one, never a half-written output; an interrupted fine-tune resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from compressor.train.loop import _last_checkpoint
from tests.robustness.harness import Result, expect_success, leftovers, record

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds; generous: the machine is shared
EXPORT_ARGS = ("--quantize", "dynamic", "--fuse", "auto", "--max-length", "32", "--seq-len", "16", "-q")


def _sigint_default() -> None:
    # A shell's background job starts with SIGINT ignored and a child inherits that, so Ctrl-C would never reach
    # the command under test; a terminal user's process has the default, which is what these tests are about.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[object]) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT), "COMPRESSOR_DEBUG": "0", "OMP_NUM_THREADS": "1"}  # see conftest
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *map(str, args)],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_sigint_default,  # noqa: PLW1509 (no threads are started before the fork here)
    )


def _wait_for(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    """Poll until `ready()`; fail with the process's output if it exits or takes too long first."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def _temporaries(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


def _expect_interrupted(code: int, err: str, out: Path, case: str, args: list[object]) -> None:
    assert "Traceback" not in err, err[-3000:]
    assert code == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("Interrupted:") and "rerun" in lines[-1], err[-3000:]
    assert not out.exists() and _temporaries(out) == [], leftovers(out)
    record(case, Result([str(a) for a in args], code, "", err), lines[-1])


def test_sigint_during_finetune_then_resume(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "run"
    args = [
        "finetune",
        ckpt,
        "--data",
        train_tsv,
        "--out",
        out,
        "--max-steps",
        "120",
        "--save-steps",
        "5",
        "--batch-size",
        "4",
        "--max-length",
        "32",
        "-q",
    ]
    checkpoints = tmp_path / ".run.partial" / "checkpoints"
    proc = _start(args)
    # complete: a state that parses (a signal while it is being written would leave nothing to resume from)
    _wait_for(proc, lambda: _last_checkpoint(checkpoints) is not None, "the first complete checkpoint")
    proc.send_signal(signal.SIGINT)
    code, _, err = _finish(proc)
    _expect_interrupted(code, err, out, "Ctrl-C (SIGINT) during finetune", args)
    assert any(checkpoints.glob("checkpoint-*")), "the checkpoints for --resume must survive the interrupt"

    result = cli(*[a for a in args if a != "-q"], "--resume")
    expect_success(
        result,
        case="finetune --resume after Ctrl-C",
        note="continues from the last complete checkpoint and writes --out whole",
    )
    assert "resuming from" in result.err and "checkpoint-" in result.err
    assert result.out.splitlines()[-1] == f"wrote {out}"
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["steps"] == 120
    assert (out / "adapter.safetensors").is_file()
    assert leftovers(out) == ["run"]  # the checkpoints are removed once the run is complete


def test_resume_skips_a_checkpoint_cut_short(tmp_path: Path) -> None:
    """A kill while the Trainer saves leaves a checkpoint without trainer_state.json: resume uses the one before."""
    states = {10: "{}", 20: None, 30: "", 40: '{"global_step": 4'}  # none; empty; cut mid-write
    for step, state in states.items():
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state, encoding="utf-8")
    assert _last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_sigint_during_export(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "artifact"
    args = ["export", ckpt, "--out", out, *EXPORT_ARGS]
    proc = _start(args)
    _wait_for(proc, lambda: bool(_temporaries(out)), "the export to start writing")
    proc.send_signal(signal.SIGINT)
    code, _, err = _finish(proc)
    _expect_interrupted(code, err, out, "Ctrl-C (SIGINT) during export", args)


def test_sigterm_during_export_is_handled_like_ctrl_c(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "artifact"
    args = ["export", ckpt, "--out", out, *EXPORT_ARGS]
    proc = _start(args)
    _wait_for(proc, lambda: bool(_temporaries(out)), "the export to start writing")
    proc.send_signal(signal.SIGTERM)  # what `timeout`, docker and systemd send
    code, _, err = _finish(proc)
    assert "Traceback" not in err, err[-3000:]
    assert code == 143, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("Terminated:") and "rerun" in lines[-1], err[-3000:]
    assert not out.exists() and _temporaries(out) == [], leftovers(out)
    record("SIGTERM during export (timeout, docker stop)", Result([str(a) for a in args], code, "", err), lines[-1])


def test_sigkill_during_export_leaves_no_artifact(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "artifact"
    args = ["export", ckpt, "--out", out, *EXPORT_ARGS]
    proc = _start(args)
    _wait_for(proc, lambda: bool(_temporaries(out)), "the export to start writing")
    proc.kill()
    proc.communicate(timeout=TIMEOUT)
    assert not out.exists()  # never a half artifact under the real name
    assert [p.name.split("-")[1] for p in _temporaries(out)] == [str(proc.pid)]  # only hidden, tagged with its PID
    record(
        "SIGKILL during export",
        Result([str(a) for a in args], proc.returncode, "", ""),
        "(killed: no message) no --out; only a hidden `.artifact.tmp-PID-*` directory, removed by the next write",
    )

    result = cli(
        "export",
        ckpt,
        "--out",
        out,
        "--quantize",
        "none",
        "--fuse",
        "off",
        "--max-length",
        "32",
        "--seq-len",
        "16",
        "-q",
    )
    expect_success(
        result,
        case="export again after a SIGKILLed export",
        note="the killed run's hidden temporary directory is removed; the artifact is written whole",
    )
    assert (out / "model.onnx").is_file() and _temporaries(out) == []


@pytest.fixture
def handlers():
    """The CLI's signal handlers installed in this process, and everything restored afterwards."""
    from cli import main
    from compressor import fs

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGALRM)}
    for signum in saved:
        signal.signal(signum, main._on_signal)
    yield main
    signal.setitimer(signal.ITIMER_REAL, 0)
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    fs._interrupts.clear()


def test_an_interrupt_inside_a_finalizer_is_delivered_again(handlers) -> None:
    """Python swallows an exception raised in `__del__` (the garbage collector's usual path): Ctrl-C arriving
    there must still stop the command, a moment later."""

    class Finalized:
        def __del__(self) -> None:
            handlers._on_signal(signal.SIGINT, sys._getframe())  # what the handler sees when Ctrl-C lands here

    with pytest.raises(KeyboardInterrupt):
        Finalized()  # dropped at once: __del__ runs, the handler must not raise inside it
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
    from compressor.fs import interrupts

    assert interrupts() == (signal.SIGINT,)  # the re-delivery (SIGALRM) is not a second interrupt


def test_no_output_is_committed_after_an_interrupt_was_swallowed(handlers, tmp_path: Path) -> None:
    from compressor.fs import atomic_dir, record_interrupt

    target = tmp_path / "artifact"
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "model.onnx").write_bytes(b"x")
        record_interrupt(signal.SIGINT)  # received, but its KeyboardInterrupt never surfaced
    assert not target.exists() and list(tmp_path.iterdir()) == []
