"""Outputs: never overwrite results by accident, fail early on paths that cannot be written or a disk that is too
full, and leave nothing behind when writing fails half-way (finetune, merge, prune and export all write through
`compressor.fs.atomic_dir`)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.robustness.harness import expect_refusal, expect_success, leftovers

EXPORT_FAST = ("--quantize", "none", "--fuse", "off", "--max-length", "32", "--seq-len", "16")


def _unwritable_out(tmp_path: Path) -> tuple[Path, str]:
    """An --out that cannot be created: a read-only directory, or (as root, who may write anywhere) a path below
    a regular file."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked / "out", "is not writable"
    (tmp_path / "file").write_text("x", encoding="utf-8")
    return tmp_path / "file" / "out", "is a file, not a directory"


def test_out_exists_and_not_empty(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results", encoding="utf-8")
    result = cli("prune", ckpt, "--heads", "0.25", "--out", out, "-q")
    expect_refusal(
        result,
        case="--out exists and is not empty (no --force)",
        code=2,
        problem="is not empty",
        fix="pass --force to replace it or choose another path",
    )
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text(encoding="utf-8") == "earlier results"
    assert leftovers(out) == ["results"]  # no hidden temporary sibling either


def test_force_replaces_whole(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "stale.txt").write_text("earlier results", encoding="utf-8")
    result = cli("prune", ckpt, "--heads", "0.25", "--out", out, "--force", "-q")
    expect_success(result, case="--out exists, with --force", note="replaced in one rename; no old file survives")
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert leftovers(out) == ["results"]


def test_out_is_a_file(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    out.write_text("not a directory", encoding="utf-8")
    result = cli("prune", ckpt, "--heads", "0.25", "--out", out, "-q")
    expect_refusal(result, case="--out is an existing file", code=2, problem="is a file", fix="pass a directory path")
    assert out.read_text(encoding="utf-8") == "not a directory"


@pytest.mark.parametrize("command", ["finetune", "prune", "export", "merge", "analyse"])
def test_out_not_writable(cli, tmp_path: Path, ckpt: Path, train_tsv: Path, run_dir: Path, command: str) -> None:
    out, problem = _unwritable_out(tmp_path)
    args = {
        "finetune": ("finetune", ckpt, "--data", train_tsv),
        "prune": ("prune", ckpt, "--heads", "0.25"),
        "export": ("export", ckpt, *EXPORT_FAST),
        "merge": ("merge", run_dir),
        "analyse": ("analyse", ckpt, "--data", train_tsv),
    }[command]
    result = cli(*args, "--out", out, "-q")
    expect_refusal(
        result,
        case=f"--out cannot be written ({command})",
        code=1,
        problem=problem,
        fix="choose another path",
        out=out,
    )


def test_out_below_dev_null(cli, ckpt: Path) -> None:
    result = cli("export", ckpt, *EXPORT_FAST, "--out", "/dev/null/artifact", "-q")
    expect_refusal(
        result,
        case="--out below a device file (/dev/null/artifact)",
        code=1,
        problem="`/dev/null` is a file",
        fix="choose another path",
    )


def test_export_checks_free_space_first(cli, tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=5_000_000))  # 5 MB free
    out = tmp_path / "out"
    result = cli("export", ckpt, *EXPORT_FAST, "--out", out, "-q")
    line = expect_refusal(
        result,
        case="not enough free disk space for export",
        code=1,
        problem="only 5 MB are free",
        fix="export needs about",
        out=out,
    )
    assert "MB free next to --out" in line


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _write_then_fail(target_arg: int):
    """A writer that leaves a partial file in its output directory, then fails like a full disk."""

    def writer(*args: object, **kwargs: object) -> None:
        dest = Path(str(args[target_arg]))
        folder = dest if dest.is_dir() else dest.parent
        (folder / "partial.bin").write_bytes(b"\0" * 1024)
        _disk_full()

    return writer


@pytest.mark.parametrize(
    "command",
    ["finetune", "merge", "prune", "export"],
)
def test_disk_full_while_writing(
    cli, tmp_path: Path, ckpt: Path, train_tsv: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """The disk fills up while the output is being written: one line, exit 1, and no output at all."""
    if command == "finetune":
        import safetensors.torch

        monkeypatch.setattr(safetensors.torch, "save_file", _write_then_fail(1))
        args = ("finetune", ckpt, "--data", train_tsv, "--max-steps", "1", "--batch-size", "8", "--max-length", "32")
    elif command == "merge":
        import compressor.stages.merge

        monkeypatch.setattr(compressor.stages.merge, "save_model", _write_then_fail(2))
        args = ("merge", run_dir)
    elif command == "prune":
        import compressor.stages.prune

        monkeypatch.setattr(compressor.stages.prune, "save_model", _write_then_fail(2))
        args = ("prune", ckpt, "--heads", "0.25")
    else:
        import exporters.onnx.export

        monkeypatch.setattr(exporters.onnx.export, "write_manifest", _write_then_fail(0))
        args = ("export", ckpt, *EXPORT_FAST)
    out = tmp_path / "out"
    result = cli(*args, "--out", out, "-q")
    stray = [name for name in leftovers(out) if name != f".{out.name}.partial"]  # finetune's resume state may stay
    assert stray == [], stray
    expect_refusal(
        result,
        case=f"disk fills up while writing ({command})",
        code=1,
        problem="No space left on device",
        fix="free disk space or choose another --out",
    )


def test_stale_temporary_from_a_killed_run_is_removed(cli, tmp_path: Path, ckpt: Path) -> None:
    """What a SIGKILLed run left (`.NAME.tmp-PID-*` of a dead PID) goes at the next write; a live run's stays."""
    done = subprocess.Popen(["true"])
    done.wait()
    out = tmp_path / "out"
    stale = tmp_path / f".out.tmp-{done.pid}-abc123"
    live = tmp_path / f".out.tmp-{os.getpid()}-def456"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 10)
    result = cli("prune", ckpt, "--heads", "0.25", "--out", out, "-q")
    assert result.code == 0, result.err
    assert not stale.exists() and live.exists()
    assert (out / "model.safetensors").is_file()


def test_scratch_directories_of_killed_processes_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library run's scratch directory (distillation checkpoints, latency probes, profiles) that a SIGKILL left
    behind goes when the next one of its kind starts; a live process's stays, and each removes its own on exit."""
    import tempfile

    from compressor.fs import scratch_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    done = subprocess.Popen(["true"])
    done.wait()
    stale = tmp_path / f"compressor-distill-{done.pid}-abc123"
    live = tmp_path / f"compressor-distill-{os.getppid()}-def456"
    other = tmp_path / f"compressor-latency-{done.pid}-ghi789"  # another kind: left to its own next run
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 10)
    with scratch_dir("compressor-distill-") as scratch:
        assert scratch.is_dir() and scratch.parent == tmp_path
        assert scratch.name.startswith(f"compressor-distill-{os.getpid()}-")
        assert not stale.exists() and live.exists() and other.exists()
    assert not scratch.exists()
