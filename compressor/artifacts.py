"""Outputs appear whole or not at all: write into a temporary sibling directory, then rename into place."""

from __future__ import annotations

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
        raise ConfigError(f"--out `{target}` exists and is not empty; pass --force to replace it or choose another path")
    parent = target.parent if target.parent != Path("") else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise CompressorError(f"--out `{target}` is not writable (no write permission on `{probe}`); choose another path")


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `target`; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
