"""What a pipeline stage is: the `Stage` protocol, the `Context` it runs in, and the `STAGES` registry.

A stage is one object, registered once (compressor/stages/__init__.py): its config dataclass (the keys a recipe
gives it, and the CLI's options), the slots of the pipeline it reads and fills, the data files it reads, `run`
(which writes its output directory whole and returns a JSON-able summary), and how the report shows it. The recipe
parser, the order checks, the run directory, resume and the report all read these attributes; none of them names
a stage.

Slots are what flows between stages: `model` (a checkpoint directory, or `minilm`), `adapter` (a fine-tuning run
directory), `plan` (an analysis directory holding plan.json), `artifact` (an exported artifact; every export adds
one, the benchmark reads them all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from compressor.registry import Registry
from compressor.schema import build_strict

SLOTS = ("model", "adapter", "plan", "artifact")
Block = tuple[str, Any]  # ("p", text) | ("table", (headers, rows)) | ("img", (path, alt)) | ("list", items) | …
Section = tuple[str, list[Block]]


class DataSource(Protocol):
    """The labelled data a stage may read (see compressor/stages/context.py)."""

    def train(self, id2label: dict[int, str] | None = None) -> Any: ...

    def eval(self, id2label: dict[int, str] | None = None) -> Any: ...


@dataclass
class Context:
    """Everything a stage reads besides its config, and where it writes.

    Attributes:
        out: the stage's output directory; it does not exist yet, and `run` writes it whole (atomically).
        model: the current checkpoint (a directory, or `minilm`); None before a recipe has one.
        adapter: the fine-tuning run directory a merge folds.
        plan: the analysis directory whose plan.json a prune with `plan: analyse` follows.
        artifacts: exported artifacts by name, in export order (what a benchmark compares).
        history: earlier stages' settings, carried into an artifact's manifest.
        resume: the stage was interrupted before with the same settings; its own checkpoints may be reused.
    """

    out: Path
    data: DataSource
    model: str | None = None
    adapter: Path | None = None
    plan: Path | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    resume: bool = False
    quiet: bool = False
    name: str = ""


class Stage(Protocol):
    """One pipeline stage. `key` is what a recipe and the CLI call it."""

    key: ClassVar[str]
    config_cls: ClassVar[type]
    output: ClassVar[str]  # the directory `run` writes inside the run's `NN-name/`
    gives: ClassVar[str | None]  # the slot its output fills (None: a report only)
    consumes: ClassVar[tuple[str, ...]]  # slots that are stale after it (a fine-tune leaves the model unmerged)
    repeatable: ClassVar[bool]  # may appear more than once in a recipe, under distinct `name`s
    example: ClassVar[str]  # a recipe entry, as YAML (docs and tests read it)

    def needs(self, config: Any) -> tuple[str, ...]:
        """Slots `run` reads."""
        ...

    def data(self, config: Any) -> dict[str, bool]:
        """Data files `run` reads, `train`/`eval` → whether it cannot run without them."""
        ...

    def parse(self, values: dict[str, Any], *, source: str, base_dir: Path) -> Any:
        """A recipe entry's mapping → the validated config (relative paths resolve from `base_dir`)."""
        ...

    def run(self, ctx: Context, config: Any) -> dict[str, Any]:
        """Do the work, write `ctx.out` whole, return a JSON-able summary (stored in the stage's DONE marker)."""
        ...

    def row(self, summary: dict[str, Any]) -> dict[str, str]:
        """The stage's cells in the report's Stages table: `params`, `accuracy`, `note`."""
        ...

    def describe(self, summary: dict[str, Any]) -> str:
        """One line for the terminal: what the stage did."""
        ...

    def sections(self, view: StageView) -> list[Section]:
        """Report sections this stage contributes (titles from compressor.stages.report.SECTIONS)."""
        ...


@dataclass
class StageView:
    """A finished (or unfinished) stage as the report sees it: read back from its directory."""

    dir: Path
    name: str
    key: str
    config: dict[str, Any]
    summary: dict[str, Any]
    seconds: float | None
    status: str  # ran | resumed | reused | incomplete
    run_dir: Path
    earlier: list[StageView] = field(default_factory=list)  # the stages before it, in run order

    @property
    def done(self) -> bool:
        return self.status != "incomplete"

    @property
    def out(self) -> Path:
        return self.dir / STAGES.get(self.key).output


STAGES: Registry[Stage] = Registry("stage")


class StageBase:
    """Defaults for the parts of `Stage` most stages share; a stage overrides what differs."""

    consumes: ClassVar[tuple[str, ...]] = ()
    repeatable: ClassVar[bool] = False

    def needs(self, config: Any) -> tuple[str, ...]:
        return ("model",)

    def data(self, config: Any) -> dict[str, bool]:
        return {}

    def parse(self, values: dict[str, Any], *, source: str, base_dir: Path) -> Any:
        return build_strict(self.config_cls, values, source)  # type: ignore[attr-defined]

    def row(self, summary: dict[str, Any]) -> dict[str, str]:
        return default_row(summary)

    def describe(self, summary: dict[str, Any]) -> str:
        return ""

    def sections(self, view: StageView) -> list[Section]:
        return []


def default_row(summary: dict[str, Any]) -> dict[str, str]:
    """Cells from the keys most stages record: `params` (and `trainable`), `accuracy` (or a regression's `score`,
    shown with its metric's name: `pearson 0.8123`)."""
    params = summary.get("params")
    text = f"{params:,}" if isinstance(params, int) else "-"
    if isinstance(summary.get("trainable"), int):
        text += f" ({summary['trainable']:,} trained)"
    return {"params": text, "accuracy": score_text(summary), "note": ""}


def score_fields(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """A stage summary's quality keys from an evaluation's metrics: `accuracy` for classification; for regression
    `accuracy` None, `metric` (pearson), `score` (its value) and `regression` (pearson, spearman, mse)."""
    from compressor.task import REGRESSION_METRICS

    metrics = metrics or {}
    if metrics.get("pearson") is None:
        return {"accuracy": metrics.get("accuracy")}
    regression = {k: float(metrics[k]) for k in REGRESSION_METRICS if metrics.get(k) is not None}
    return {"accuracy": None, "metric": "pearson", "score": regression["pearson"], "regression": regression}


def score_text(summary: dict[str, Any]) -> str:
    """`81.25%` for accuracy, `pearson 0.8123` for a regression's score, `-` without either."""
    from compressor.task import format_metric

    if summary.get("accuracy") is not None:
        return format_metric("accuracy", summary["accuracy"])
    if summary.get("score") is not None:
        return format_metric(str(summary.get("metric") or "score"), summary["score"])
    return "-"
