"""Labelled text data from local files: csv, tsv, jsonl, parquet, or a `datasets` directory (`save_to_disk`).

Everything ends up as a `datasets.Dataset` with the columns `text`, optionally `text_pair`, and `label` (int),
plus the label map. Bad input raises a `DataError` naming the file and the column.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.errors import DataError

logger = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
TEXT_CANDIDATES = ("text", "sentence", "sentence1", "content", "review")


@dataclass
class LabelledData:
    """A labelled dataset with columns `text`, [`text_pair`], `label` (int ids into `id2label`)."""

    dataset: Any  # datasets.Dataset
    id2label: dict[int, str]
    path: Path
    columns: dict[str, str | None] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return list(self.dataset["text"])

    @property
    def text_pairs(self) -> list[str] | None:
        return list(self.dataset["text_pair"]) if "text_pair" in self.dataset.column_names else None

    @property
    def labels(self) -> list[int]:
        return list(self.dataset["label"])

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def __len__(self) -> int:
        return len(self.dataset)

    def head(self, n: int | None) -> LabelledData:
        """The first `n` rows (all when `n` is None or larger)."""
        if n is None or n >= len(self.dataset):
            return self
        return LabelledData(self.dataset.select(range(n)), self.id2label, self.path, self.columns)

    def sample(self, n: int | None, seed: int = 0) -> LabelledData:
        """`n` rows drawn without replacement with a fixed seed (all rows when `n` is None or larger)."""
        if n is None or n >= len(self.dataset):
            return self
        return LabelledData(self.dataset.shuffle(seed=seed).select(range(n)), self.id2label, self.path, self.columns)


def _read_frame(path: Path) -> Any:
    import pandas as pd

    if path.is_dir():
        return None
    suffix = path.suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise DataError(
            f"data file `{path}` has an unknown format `{suffix or '(no extension)'}`; "
            f"use one of {', '.join(sorted(FORMATS))} or a `save_to_disk` directory"
        )
    if path.stat().st_size == 0:
        raise DataError(f"data file `{path}` is empty; it needs a header row and at least one example")
    try:
        if fmt == "tsv":
            # GLUE-style TSV: no quoting (sentences contain quotes)
            return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8", keep_default_na=False)
        if fmt == "csv":
            return pd.read_csv(path, encoding="utf-8", keep_default_na=False)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, encoding="utf-8")
        return pd.read_parquet(path)
    except UnicodeDecodeError as err:
        raise DataError(f"data file `{path}` is not UTF-8 text (byte {err.start}); re-encode it as UTF-8") from None
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(
            f"data file `{path}` cannot be parsed as {fmt} ({str(err).splitlines()[0][:200]}); fix the file or give "
            "it the extension of its real format"
        ) from None
    except (OSError, ImportError) as err:
        raise DataError(f"data file `{path}` cannot be read: {err}") from None


def load_data(
    path: str | Path,
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str = "label",
    id2label: dict[int, str] | None = None,
    require_labels: bool = True,
    max_rows: int | None = None,
) -> LabelledData:
    """Load a labelled file and map its labels to ids.

    Args:
        text_column: column holding the text; default: the first of text, sentence, sentence1, content, review.
        id2label: an existing label map (from training data or the checkpoint); labels outside it are an error.
        require_labels: False for unlabelled text (all labels become -1).
        max_rows: read at most this many rows (after loading; for quick runs).
    """
    import datasets
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DataError(f"data file `{path}` not found; pass a csv, tsv, jsonl or parquet file or a dataset directory")
    frame = _read_frame(path)
    if frame is None:
        try:
            frame = datasets.load_from_disk(str(path)).to_pandas()
        except (FileNotFoundError, ValueError) as err:
            raise DataError(
                f"`{path}` is a directory but not a `save_to_disk` dataset ({err}); pass a data file or a directory "
                "written by `Dataset.save_to_disk`"
            ) from None
    if len(frame) == 0:
        raise DataError(f"data file `{path}` has a header but no rows; it needs at least one example")
    columns = [str(c) for c in frame.columns]
    if text_column is None:
        text_column = next((c for c in TEXT_CANDIDATES if c in columns), None)
        if text_column is None:
            raise DataError(
                f"data file `{path}`: no text column found (looked for {', '.join(TEXT_CANDIDATES)}); "
                f"columns are {', '.join(columns)}; pass --text-column"
            )
    for role, col in (("text", text_column), ("text pair", text_pair_column)):
        if col is not None and col not in columns:
            flag = "--text-column" if role == "text" else "--text-pair-column"
            raise DataError(
                f"data file `{path}` has no {role} column `{col}`; columns are {', '.join(columns)}; pass {flag}"
            )
    if require_labels and label_column not in columns:
        raise DataError(
            f"data file `{path}` has no label column `{label_column}`; columns are {', '.join(columns)}; "
            "pass --label-column"
        )
    if max_rows is not None:
        frame = frame.head(max_rows)
    out = pd.DataFrame({"text": frame[text_column].astype(str)})
    if text_pair_column is not None:
        out["text_pair"] = frame[text_pair_column].astype(str)
    if require_labels:
        raw = frame[label_column].tolist()
        id2label, ids = _map_labels(raw, id2label, path, label_column)
        out["label"] = ids
    else:
        out["label"] = -1
        id2label = id2label or {}
    dataset = datasets.Dataset.from_pandas(out, preserve_index=False)
    logger.info("loaded %d rows from %s (%d labels)", len(dataset), path, len(id2label))
    cols = {"text": text_column, "text_pair": text_pair_column, "label": label_column if require_labels else None}
    return LabelledData(dataset, id2label, path, cols)


def _label_key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _map_labels(
    raw: list[Any], id2label: dict[int, str] | None, path: Path, column: str
) -> tuple[dict[int, str], list[int]]:
    keys = [_label_key(v) for v in raw]
    if any(k in ("", "nan", "None") for k in keys):
        row = next(i for i, k in enumerate(keys) if k in ("", "nan", "None"))
        raise DataError(
            f"data file `{path}`: column `{column}` has an empty label in row {row + 1}; fill it in or remove the row"
        )
    if id2label is None:
        distinct = sorted(
            set(keys), key=lambda k: (not k.lstrip("-").isdigit(), int(k) if k.lstrip("-").isdigit() else 0, k)
        )
        if all(k.lstrip("-").isdigit() for k in distinct) and [int(k) for k in distinct] == list(range(len(distinct))):
            id2label = {int(k): k for k in distinct}  # integer labels 0..n-1 keep their ids
        else:
            id2label = dict(enumerate(distinct))
    label2id = {str(v): int(k) for k, v in id2label.items()}
    if set(keys) - set(label2id) and all(k.isdigit() and int(k) in id2label for k in keys):
        label2id = {k: int(k) for k in set(keys)}  # integer labels are the model's label ids
    unseen = sorted(set(keys) - set(label2id))
    if unseen:
        raise DataError(
            f"data file `{path}`: column `{column}` has label(s) {', '.join(unseen[:5])} that the model does not know "
            f"(known: {', '.join(label2id)}); remove those rows or train on data that has every label"
        )
    return {int(k): str(v) for k, v in id2label.items()}, [label2id[k] for k in keys]


def check_trainable(data: LabelledData) -> None:
    """Training needs at least two classes."""
    present = set(data.labels)
    if len(present) < 2:
        raise DataError(
            f"data file `{data.path}` has a single class ({data.id2label.get(next(iter(present)), '?')}); "
            "a classifier needs examples of at least two labels"
        )


def check_matches_model(data: LabelledData, model_num_labels: int, model_path: str) -> None:
    """The checkpoint's classifier must have as many outputs as the data has labels."""
    if data.num_labels != model_num_labels:
        raise DataError(
            f"data file `{data.path}` has {data.num_labels} labels but the checkpoint `{model_path}` classifies "
            f"into {model_num_labels}; use data with the same label set or start from a base encoder"
        )
