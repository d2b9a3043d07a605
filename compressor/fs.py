"""Outputs appear whole or not at all: write into a temporary sibling directory, then rename into place."""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from compressor.errors import CompressorError, ConfigError


def check_out_dir(target: Path, *, force: bool = False) -> None:
    """Fail early (before any work) when `target` cannot be written or would overwrite results."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out `{target}` is a file; pass a directory path")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ConfigError(
            f"--out `{target}` exists and is not empty; pass --force to replace it or choose another path"
        )
    parent = target.parent if target.parent != Path("") else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise CompressorError(
            f"--out `{target}` cannot be created: `{probe}` is a file, not a directory; choose another path"
        )
    if not os.access(probe, os.W_OK):
        raise CompressorError(
            f"--out `{target}` is not writable (no write permission on `{probe}`); choose another path"
        )


# Signals (Ctrl-C, SIGTERM) the command line received. Python swallows an exception raised inside `__del__`,
# so a KeyboardInterrupt can get lost; an output is never committed once one was received.
_interrupts: list[int] = []


def record_interrupt(signum: int) -> None:
    """Note that the process was asked to stop (the CLI's signal handler calls this)."""
    _interrupts.append(signum)


def interrupts() -> tuple[int, ...]:
    """The signals received so far, oldest first."""
    return tuple(_interrupts)


# A write failing with one of these is the disk's fault (full, quota, read-only), not the input's.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `target`; on success it replaces `target` in one rename.

    The temporary name carries the process id, so a later run removes what a killed run (SIGKILL, power loss)
    left behind; a run that fails or is interrupted removes its own.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in _WRITE_ERRNOS:
            raise CompressorError(
                f"writing `{target}` failed ({err.strerror}); nothing was written; free disk space or choose "
                "another --out"
            ) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if _interrupts:  # interrupted, but the KeyboardInterrupt was swallowed on the way: do not commit
        shutil.rmtree(tmp, ignore_errors=True)
        raise KeyboardInterrupt
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary working directory (`tempfile.TemporaryDirectory`), named `PREFIX<pid>-…`, removed on exit.

    A killed process (SIGKILL, power loss) cannot remove its own; so each new one first deletes those of the same
    prefix whose process no longer runs (a distillation's checkpoints are tens of MB each).
    """
    root = Path(tempfile.gettempdir())
    _remove_dead(root, prefix)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=root) as tmp:
        yield Path(tmp)


def _remove_stale_temps(target: Path) -> None:
    """Delete `.NAME.tmp-PID-*` siblings of `target` whose process no longer runs."""
    _remove_dead(target.parent, f".{target.name}.tmp-")


def _remove_dead(folder: Path, prefix: str) -> None:
    """Delete the directories `PREFIX<pid>-*` in `folder` whose process no longer runs."""
    for path in folder.glob(f"{glob.escape(prefix)}*"):
        pid = path.name[len(prefix) :].split("-")[0]
        if path.is_dir() and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents; hidden entries skipped)."""
    path = Path(path)
    h = hashlib.sha256()
    files = (
        [path]
        if path.is_file()
        else sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    )
    for file in files:
        h.update(file.relative_to(path).as_posix().encode() if file != path else b"")
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def is_main_process() -> bool:
    """True except on the non-zero ranks of a distributed run (accelerate launch / torchrun set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def out_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on writing `target` for the whole block.

    A second command writing the same --out at the same time gets a one-line error instead of silently replacing
    the first one's result (in a distributed run, rank 0 takes it for all ranks). The lock file lives in the
    system's temporary directory, named after the resolved path, so nothing is left beside --out; the lock is
    released when the process ends, however it ends.
    """
    from filelock import FileLock, Timeout

    if not is_main_process():  # a non-zero rank of accelerate/torchrun: rank 0 holds the lock and writes
        yield
        return
    resolved = str(Path(target).resolve())
    locks = Path(tempfile.gettempdir()) / "compressor-locks"
    locks.mkdir(exist_ok=True)
    lock = FileLock(str(locks / f"{hashlib.sha256(resolved.encode()).hexdigest()[:32]}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise CompressorError(
            f"`{target}` is being written by another compressor process; wait for it to finish or choose another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()
