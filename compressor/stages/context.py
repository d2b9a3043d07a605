"""Where a stage's data comes from: `DataSpec` (the recipe's `data:` and the commands' data options) and
`DataFiles`, which loads each file once, on first use, with the label ids of the model that reads it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from compressor.data import check_matches_model, load_data
from compressor.errors import ConfigError
from compressor.schema import HASH_IF_SET
from compressor.task import REGRESSION, TASKS, config_task

GENERIC_LABEL = re.compile(r"^LABEL_\d+$")


@dataclass(kw_only=True)
class DataSpec:
    """Where the labelled data is and how to read it."""

    kind: ClassVar[str] = "data"
    version: ClassVar[int] = 1

    train: str | None = field(
        default=None,
        metadata={
            "help": "Training data (csv, tsv, jsonl, parquet or a datasets dir): fine-tuning, scoring, recovery.",
            "flag": "--data",
            "short": "-d",
        },
    )
    eval: str | None = field(
        default=None,
        metadata={
            "help": "Validation data: accuracy after each stage, the int8 gate and the benchmark.",
            "flag": "--eval-data",
        },
    )
    text_column: str | None = field(default=None, metadata={"help": "Text column (default: text, sentence, …)."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text column for pair tasks."})
    label_column: str = field(
        default="label", metadata={"help": "Label column (strings or integers; numbers for regression)."}
    )
    task: str = field(
        default="auto",
        metadata={
            "help": "classification, regression (a float score per row, one model output), or auto: regression "
            "when the labels are numbers and not all whole; a trained checkpoint's own task comes first.",
            HASH_IF_SET: True,
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Use a seeded sample of N training rows for fine-tuning and scoring (recovery reads all)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the training sample.", "flag": "--data-seed"})

    def __post_init__(self) -> None:
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ConfigError(
                f"`max_train_samples` must be a positive integer or null; got {self.max_train_samples!r}"
            )
        if self.task not in TASKS:
            raise ConfigError(f"`task` must be one of {', '.join(TASKS)}; got {self.task!r}")

    @property
    def columns(self) -> dict[str, Any]:
        return {
            "text_column": self.text_column,
            "text_pair_column": self.text_pair_column,
            "label_column": self.label_column,
        }


def model_labels(config: dict[str, Any]) -> dict[int, str] | None:
    """A checkpoint's label map when it has a trained classifier with named labels, else None (the data decides).

    Args:
        config: the checkpoint's config.json, as read by `compressor.checkpoint.read_config`.
    """
    has_head = any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])
    raw = config.get("id2label") or {}
    labels = {int(k): str(v) for k, v in raw.items()} if all(str(k).lstrip("-").isdigit() for k in raw) else {}
    if not has_head or not labels or all(GENERIC_LABEL.match(v) for v in labels.values()):
        return None
    return labels


def model_task(config: dict[str, Any]) -> str | None:
    """A checkpoint's task when it has a trained head (`classification` or `regression`), else None (the data
    decides).

    Args:
        config: the checkpoint's config.json, as read by `compressor.checkpoint.read_config`.
    """
    has_head = any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])
    return config_task(config) if has_head else None


class DataFiles:
    """The data of one run or command: each file loaded once, the training rows sampled as `DataSpec` says.

    A file read for a model with named labels is mapped to that model's label ids (by name, or integer labels as
    ids); without a model's labels, the training file defines them and the validation file follows it. The task
    (regression or classification) is the model's when it has a trained head, else `DataSpec.task`, else the
    training file's (see compressor/task.py); the validation file follows it.
    """

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        self._cache: dict[tuple[str, Any], Any] = {}

    def path(self, which: str) -> Path | None:
        value = getattr(self.spec, which)
        return None if value is None else Path(value)

    def train(self, id2label: dict[int, str] | None = None, *, sample: bool = True, task: str | None = None) -> Any:
        """The training rows (a seeded sample of `max_train_samples` when `sample`), or None without a file.

        Args:
            task: the model's task when it has a trained head (`model_task`); the data must fit it.
        """
        rows = self._load("train", id2label, task)
        if rows is None or not sample:
            return rows
        return rows.sample(self.spec.max_train_samples, seed=self.spec.seed)

    def eval(self, id2label: dict[int, str] | None = None, *, task: str | None = None) -> Any:
        """The validation rows, or None without a file; labels (and the task) follow `id2label` and `task`, else
        the training file's."""
        if id2label is None and self.spec.train is not None and self.spec.eval is not None:
            train = self.train(sample=False, task=task)
            id2label, task = train.id2label, train.task
        return self._load("eval", id2label, task)

    def require(self, which: str, stage: str) -> Path:
        path = self.path(which)
        if path is None:
            flag = "--data" if which == "train" else "--eval-data"
            raise ConfigError(f"{stage} needs {'training' if which == 'train' else 'validation'} data: pass {flag}")
        return path

    def _load(self, which: str, id2label: dict[int, str] | None, task: str | None) -> Any:
        path = self.path(which)
        if path is None:
            return None
        wanted = self.spec.task
        if task is not None and wanted not in ("auto", task):
            raise ConfigError(
                f"`task` is {wanted} but the model is a trained {task} model; drop `task` or start from a base encoder"
            )
        # A regression model reads its data as scores. A classifier's data stays `auto` (unless told), so scores
        # given to a classifier are recognised as such and refused with a message that says so.
        task = REGRESSION if task == REGRESSION else wanted
        if task == REGRESSION:
            id2label = None  # a regression head's label map is generic: the scores are read as they are
        key = (which, None if id2label is None else tuple(sorted(id2label.items())), task)
        if key not in self._cache:
            rows = load_data(path, id2label=id2label, task=task, **self.spec.columns)
            if id2label is not None:
                check_matches_model(rows, len(id2label), "the model")
            self._cache[key] = rows
        return self._cache[key]


def check_inputs_outside(out: Path, inputs: list[Path | str | None]) -> None:
    """Refuse an output directory that is an input, contains one, or contains the working directory: replacing it
    would delete them."""
    target = Path(out).resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise ConfigError(
            f"--out `{out}` is the working directory or one of its parents; name a new directory, e.g. --out result"
        )
    for item in inputs:
        if item is None or str(item) == "minilm":
            continue
        path = Path(item).resolve()
        if path == target or target in path.parents:
            raise ConfigError(
                f"--out `{out}` {'is' if path == target else 'contains'} the input `{item}`; replacing it would "
                "delete that input: choose another --out"
            )


def resolve_path(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path)
