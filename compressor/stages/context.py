"""Where a stage's data comes from: `DataSpec` (the recipe's `data:` and the commands' data options) and
`DataFiles`, which loads each file once, on first use, with the label ids of the model that reads it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from compressor.data import check_matches_model, load_data
from compressor.errors import ConfigError

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
    label_column: str = field(default="label", metadata={"help": "Label column (strings or integers)."})
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


class DataFiles:
    """The data of one run or command: each file loaded once, the training rows sampled as `DataSpec` says.

    A file read for a model with named labels is mapped to that model's label ids (by name, or integer labels as
    ids); without a model's labels, the training file defines them and the validation file follows it.
    """

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        self._cache: dict[tuple[str, Any], Any] = {}

    def path(self, which: str) -> Path | None:
        value = getattr(self.spec, which)
        return None if value is None else Path(value)

    def train(self, id2label: dict[int, str] | None = None, *, sample: bool = True) -> Any:
        """The training rows (a seeded sample of `max_train_samples` when `sample`), or None without a file."""
        rows = self._load("train", id2label)
        if rows is None or not sample:
            return rows
        return rows.sample(self.spec.max_train_samples, seed=self.spec.seed)

    def eval(self, id2label: dict[int, str] | None = None) -> Any:
        """The validation rows, or None without a file; labels follow `id2label`, else the training file's."""
        if id2label is None and self.spec.train is not None and self.spec.eval is not None:
            id2label = self.train(sample=False).id2label
        return self._load("eval", id2label)

    def require(self, which: str, stage: str) -> Path:
        path = self.path(which)
        if path is None:
            flag = "--data" if which == "train" else "--eval-data"
            raise ConfigError(f"{stage} needs {'training' if which == 'train' else 'validation'} data: pass {flag}")
        return path

    def _load(self, which: str, id2label: dict[int, str] | None) -> Any:
        path = self.path(which)
        if path is None:
            return None
        key = (which, None if id2label is None else tuple(sorted(id2label.items())))
        if key not in self._cache:
            rows = load_data(path, id2label=id2label, **self.spec.columns)
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
