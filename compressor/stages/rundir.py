"""A run directory: numbered stage directories, each with stage.json first and a DONE marker last.

    DIR/run.json             written first: marks DIR as a run (only such a directory is resumed), then the
                             stage directories of the last run, in order, and what each one did
    DIR/recipe.json          the resolved recipe (every default filled in)
    DIR/NN-name/stage.json   the stage's resolved config, its hash and its inputs' hashes (written first)
    DIR/NN-name/<output>/    what the stage wrote (`adapter/`, `model/`, `artifact/`, `analysis/`, …)
    DIR/NN-name/DONE         seconds, the output's content hash and the stage's summary (written last)

`Run.begin` decides per stage: skip it (DONE, same config hash, same input hashes, nothing before it reran),
resume it (interrupted with the same config and inputs: its own checkpoints are still valid) or start it afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.checkpoint import resolve_model_path
from compressor.errors import CompressorError, ConfigError
from compressor.fs import content_hash
from compressor.schema import load_json, save_json

logger = logging.getLogger(__name__)

DONE = "DONE"
STAGE_FILE = "stage.json"
RECIPE_FILE = "recipe.json"
RUN_FILE = "run.json"
RUN_KIND = "compressor-run"
STAGE_DIR = re.compile(r"^\d{2}-[a-z0-9-]+$")


@dataclass
class StageRun:
    """One stage directory of this run: `status` is `skipped` (done before), `resumed` or `ran`."""

    dir: Path
    name: str
    key: str
    output: str
    config_hash: str
    inputs: dict[str, str]
    status: str = "ran"
    started: float = field(default_factory=time.perf_counter)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.dir / self.output

    @property
    def done(self) -> bool:
        return self.status == "skipped"

    @property
    def output_hash(self) -> str:
        return self.record["output_hash"]

    @property
    def summary(self) -> dict[str, Any]:
        return self.record.get("summary", {})


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def is_run_dir(path: Path) -> bool:
    """Whether `path` was started by `compressor run` (its run.json says so)."""
    marker = read_json(Path(path) / RUN_FILE)
    return marker is not None and marker.get("kind") == RUN_KIND


class Run:
    """Numbering, skipping and recording of the stage directories of one run."""

    def __init__(self, out_dir: Path, *, resume: bool, recipe_name: str = "") -> None:
        self.dir = out_dir
        self.resume = resume
        self.recipe_name = recipe_name
        self.rerun = False  # once a stage runs, every later stage runs too
        self.stages: list[StageRun] = []
        self._hashes: dict[str, str] = {}

    @classmethod
    def open(cls, out_dir: Path, *, resume: bool, force: bool, recipe_name: str) -> Run:
        """Start (or, with `resume`, continue) the run in `out_dir`; refuses to touch a folder that is not a run."""
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"--out `{out_dir}` is a file; pass a directory path")
        used = out_dir.is_dir() and any(out_dir.iterdir())
        if resume and used and not is_run_dir(out_dir):
            raise ConfigError(
                f"--out `{out_dir}` is not a run directory (it has no {RUN_FILE} from `compressor run`); --resume "
                "continues a run: pass that run's --out, or drop --resume and choose a new directory"
            )
        if not resume and used:
            if not force:
                raise ConfigError(
                    f"--out `{out_dir}` exists and is not empty; pass --resume to continue that run, --force to "
                    "replace it, or choose another path"
                )
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        run = cls(out_dir, resume=resume, recipe_name=recipe_name)
        run.write_index()  # the marker goes first: from now on this is a run directory
        return run

    def external(self, path: str | Path) -> str:
        """Content hash of an input that lives outside the run (the model, a data file), computed once."""
        if str(path) == "minilm":
            path = resolve_model_path("minilm")
        key = str(Path(path).resolve())
        if key not in self._hashes:
            self._hashes[key] = content_hash(Path(path))
        return self._hashes[key]

    def begin(self, name: str, key: str, output: str, config: dict[str, Any], inputs: dict[str, str]) -> StageRun:
        """Open stage `NN-name`: skipped when done with the same config and inputs, else (re)started."""
        stage_dir = self.dir / f"{len(self.stages) + 1:02d}-{name}"
        stage = StageRun(stage_dir, name, key, output, config_hash(config), dict(inputs))
        self.stages.append(stage)
        saved = read_json(stage_dir / STAGE_FILE)
        same = saved is not None and saved.get("config_hash") == stage.config_hash and saved.get("inputs") == inputs
        if self.resume and not self.rerun and same and (stage_dir / DONE).is_file():
            done = read_json(stage_dir / DONE)
            if done is not None and "output_hash" in done:
                stage.status, stage.record = "skipped", done
                logger.info("stage %s: done and unchanged, skipped", stage_dir.name)
                return stage
        self.rerun = True
        if self.resume and same and not (stage_dir / DONE).exists():
            stage.status = "resumed"  # interrupted before: its own checkpoints (if any) are still valid
            logger.info("stage %s: interrupted before, resuming", stage_dir.name)
        else:
            if stage_dir.exists():
                shutil.rmtree(stage_dir)
            logger.info("stage %s: running", stage_dir.name)
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / DONE).unlink(missing_ok=True)
        save_json(
            stage_dir / STAGE_FILE,
            {"stage": name, "key": key, "config": config, "config_hash": stage.config_hash, "inputs": inputs},
        )
        self.write_index()  # listed while it runs: an interrupted stage shows as unfinished
        stage.started = time.perf_counter()
        return stage

    def finish(self, stage: StageRun, summary: dict[str, Any]) -> None:
        """Write the completion marker, last: seconds, the output's hash and the stage's summary."""
        stage.record = {
            "stage": stage.name,
            "key": stage.key,
            "seconds": round(time.perf_counter() - stage.started, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "output_hash": content_hash(stage.out),
            "summary": summary,
        }
        save_json(stage.dir / DONE, stage.record)
        logger.info("stage %s: done in %.1f s", stage.dir.name, stage.record["seconds"])

    def write_index(self, *, prune_stale: bool = False) -> None:
        """run.json: the stage directories of this run in order; with `prune_stale`, stage directories this recipe no
        longer has are removed (only directories the tool wrote: `NN-name/` holding a stage.json)."""
        if prune_stale:
            names = {s.dir.name for s in self.stages}
            for path in self.dir.iterdir():
                stale = STAGE_DIR.match(path.name) and path.name not in names and (path / STAGE_FILE).is_file()
                if path.is_dir() and stale:
                    logger.info("removing %s (not a stage of this recipe)", path.name)
                    shutil.rmtree(path)
        save_json(
            self.dir / RUN_FILE,
            {
                "kind": RUN_KIND,
                "recipe": self.recipe_name,
                "stages": [
                    {"dir": s.dir.name, "stage": s.name, "key": s.key, "status": s.status} for s in self.stages
                ],
            },
        )


def read_json(path: Path) -> dict[str, Any] | None:
    """A run file's JSON, or None when it is missing or unreadable (an interrupted write)."""
    if not path.is_file():
        return None
    try:
        data = load_json(path, what="run file")
    except CompressorError:  # a damaged marker means "not done": the stage runs again
        return None
    return data if isinstance(data, dict) else None
