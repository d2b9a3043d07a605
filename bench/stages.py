"""A cache of finished stages: each stage writes one directory, then a marker beside it.

`out/NAME/` holds what the stage wrote; `out/NAME.done.json` (written last, atomically) holds the stage's config,
the hash of that config, its wall time, a small JSON result and a `token` naming this very run. A rerun skips a
stage whose marker exists with the same config hash and whose directory is still there. Each stage's config
carries the tokens of the stages it reads, so when a stage really runs again (its config changed, or `--rerun`),
everything downstream of it is stale too; only what is stale runs again.
A stage that was interrupted leaves `out/NAME.pending.json`: when the config is unchanged the stage is told it may
resume (fine-tuning continues from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class StageRecord:
    """One finished stage: where its output is, what produced it, how long it took (when it really ran)."""

    name: str
    path: Path
    config: dict[str, Any]
    hash: str
    seconds: float
    result: dict[str, Any]
    token: str  # config hash + when it finished: what downstream configs refer to
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"path": str(self.path)}


def config_hash(config: dict[str, Any]) -> str:
    """A short, order-independent hash of a JSON-able config."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class StageCache:
    """Run a stage unless `root/NAME` is finished with the same config.

    Args:
        root: the cache directory (`--out`).
        rerun: stage names (or name prefixes) to run again even when finished.
    """

    def __init__(self, root: Path, *, rerun: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        self.rerun = rerun
        self.records: dict[str, StageRecord] = {}

    def marker(self, name: str) -> Path:
        return self.root / f"{name}.done.json"

    def run(self, name: str, config: dict[str, Any], fn: Callable[[Path, bool], dict[str, Any] | None]) -> StageRecord:
        """Return the cached record of stage `name`, or call `fn(target_dir, resume)` and record it.

        `fn` writes `target_dir` (atomically, as every compressor verb does) and returns a JSON-able result.
        """
        target = self.root / name
        digest = config_hash(config)
        cached = self._load(name, digest, target)
        if cached is not None:
            logger.info("stage %s: cached (%.0f s when it ran)", name, cached.seconds)
            self.records[name] = cached
            return cached
        pending = self.root / f"{name}.pending.json"
        resume = _read(pending).get("hash") == digest
        self.root.mkdir(parents=True, exist_ok=True)
        _write(pending, {"name": name, "hash": digest})
        self.marker(name).unlink(missing_ok=True)
        if target.exists() and not resume:
            shutil.rmtree(target)
        logger.info("stage %s: running%s", name, " (resuming)" if resume else "")
        start = time.perf_counter()
        result = fn(target, resume) or {}
        seconds = time.perf_counter() - start
        token = config_hash({"hash": digest, "finished": time.time_ns()})
        record = StageRecord(name, target, config, digest, round(seconds, 2), result, token)
        _write(self.marker(name), record.to_dict())
        pending.unlink(missing_ok=True)
        self.records[name] = record
        return record

    def _load(self, name: str, digest: str, target: Path) -> StageRecord | None:
        if any(name.startswith(prefix) for prefix in self.rerun):
            return None
        data = _read(self.marker(name))
        if data.get("hash") != digest or not data.get("token") or not target.is_dir():
            return None
        return StageRecord(
            name,
            target,
            data.get("config", {}),
            digest,
            float(data.get("seconds", 0.0)),
            data.get("result", {}),
            data["token"],
            cached=True,
        )


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write JSON next to its final name, then rename: a marker is whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
