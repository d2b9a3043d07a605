"""Labelled text data from local files: csv, tsv, jsonl, parquet, or a `datasets` directory (`save_to_disk`).

csv, tsv and jsonl are read with the standard library only, so the edge install (numpy, onnxruntime, tokenizers,
typer, rich) can score them; parquet needs pyarrow and `save_to_disk` directories need `datasets`, both imported
only when such a file is read. Rows are kept as plain lists: `texts`, optional `text_pairs`, integer `labels` and the
label map (or, for a regression task, float `labels`: see compressor/task.py for how the task is recognised). Bad
input raises a one-line `DataError` naming the file, the line (or row) and the fix.

Formats:
    tsv: GLUE-style, tab-separated, no quoting (sentences contain quotes), so a tab cannot appear inside a text.
    csv: comma-separated with standard quoting (RFC 4180: quote fields holding commas, quotes or line breaks,
        double the quotes inside them); an unclosed quote or text after a closing quote is an error.
    jsonl: one JSON object per line; blank lines are skipped.
    All text files are UTF-8 (a byte-order mark is accepted). Every row of a csv/tsv file has as many fields as the
    header; blank lines are skipped. Texts must be strings; numbers (jsonl, parquet) are converted with `str()`
    (3 → "3", 0.5 → "0.5"), as the pandas reader did; null, booleans, lists and objects are errors. Labels may be
    strings or numbers (1.0 is the label "1"); null, empty, boolean and non-finite labels are errors.
    Regression labels are numbers, or strings that spell one ("3.8", "-1e-2"); anything else is an error.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.errors import ConfigError, DataError
from compressor.schema import is_number
from compressor.task import CLASSIFICATION, REGRESSION, REGRESSION_LABELS, TASKS

logger = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
TEXT_CANDIDATES = ("text", "sentence", "sentence1", "content", "review")
EMPTY_LABELS = ("", "nan", "None")  # how pandas spelled a missing value; kept so old files fail the same way
_INT = re.compile(r"-?[0-9]+")  # ASCII only: str.isdigit() accepts "²", which int() rejects
_NATURAL = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")  # no nan, inf or 1_000


class _Missing:
    """A key absent from a jsonl object (distinct from an explicit null)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


@dataclass
class LabelledData:
    """A labelled dataset: `texts`, [`text_pairs`], `labels` (int ids into `id2label`; -1 when unlabelled; the
    float scores themselves when `task` is regression, with the one-output label map)."""

    texts: list[str]
    labels: list[int] | list[float]
    id2label: dict[int, str]
    path: Path
    text_pairs: list[str] | None = None
    columns: dict[str, str | None] = field(default_factory=dict)
    task: str = CLASSIFICATION
    _dataset: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def is_regression(self) -> bool:
        return self.task == REGRESSION

    def __len__(self) -> int:
        return len(self.texts)

    def _take(self, indices: Sequence[int]) -> LabelledData:
        pairs = None if self.text_pairs is None else [self.text_pairs[i] for i in indices]
        texts, labels = [self.texts[i] for i in indices], [self.labels[i] for i in indices]
        return LabelledData(texts, labels, self.id2label, self.path, pairs, self.columns, self.task)

    def head(self, n: int | None) -> LabelledData:
        """The first `n` rows (all when `n` is None or larger)."""
        if n is None or n >= len(self):
            return self
        return self._take(range(max(n, 0)))

    def sample(self, n: int | None, seed: int = 0) -> LabelledData:
        """`n` rows drawn without replacement with a fixed seed (all rows when `n` is None or larger).

        The rows and their order are those of `datasets.Dataset.shuffle(seed=seed).select(range(n))`, which this
        replaced (runs recorded before keep their samples): the first `n` of `default_rng(seed).permutation(len)`.
        """
        if n is None or n >= len(self):
            return self
        import numpy as np

        order = np.random.default_rng(seed).permutation(len(self))[: max(n, 0)]
        return self._take([int(i) for i in order])

    def to_dataset(self) -> Any:
        """A `datasets.Dataset` with the columns `text`, [`text_pair`], `label` (int64; float32 for regression);
        needs `datasets`."""
        try:
            import datasets
        except ImportError:
            raise DataError(
                f"data file `{self.path}`: this step needs the `datasets` library; install it (pip install datasets)"
            ) from None
        columns: dict[str, list[Any]] = {"text": self.texts}
        features = {"text": datasets.Value("string")}
        if self.text_pairs is not None:
            columns["text_pair"] = self.text_pairs
            features["text_pair"] = datasets.Value("string")
        columns["label"] = self.labels
        features["label"] = datasets.Value("float32" if self.is_regression else "int64")
        return datasets.Dataset.from_dict(columns, features=datasets.Features(features))

    @property
    def dataset(self) -> Any:
        """`to_dataset()`, built once (callers read it several times)."""
        if self._dataset is None:
            self._dataset = self.to_dataset()
        return self._dataset


@dataclass
class _Table:
    """Columns read from a file: name → values (MISSING where a jsonl object lacks the key)."""

    fmt: str
    columns: dict[str, list[Any]]
    rows: int
    lines: list[int] | None  # the line each row starts on; None for parquet and datasets (rows only)

    def head(self, n: int) -> _Table:
        lines = None if self.lines is None else self.lines[:n]
        return _Table(self.fmt, {k: v[:n] for k, v in self.columns.items()}, min(n, self.rows), lines)

    def where(self, i: int) -> str:
        """`row 3 (line 4)`: the row counts examples, the line is where it is in the file."""
        return f"row {i + 1}" + ("" if self.lines is None else f" (line {self.lines[i]})")


def _show(value: object, limit: int = 40) -> str:
    """A file's value inside a one-line message: control characters escaped, long values cut."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _names(columns: Sequence[str]) -> str:
    return ", ".join(_show(c) for c in columns) if columns else "(none)"


def _parse_error(path: Path, fmt: str, detail: str) -> DataError:
    return DataError(
        f"data file `{path}` cannot be parsed as {fmt} ({detail}); fix the file or give it the extension of its "
        "real format"
    )


def _decode(path: Path, fmt: str) -> str:
    """The file as text; undecodable bytes are an error naming their line and byte offset."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"data file `{path}` cannot be read: {err}") from None
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = start + err.start
        before = raw[start:offset].decode("utf-8")  # valid up to the first bad byte
        # the same line breaks the reader counts: jsonl splits on \n only, csv on \n, \r and \r\n
        line = before.count("\n") + 1
        if fmt != "jsonl":
            line += before.count("\r") - before.count("\r\n")
        raise DataError(
            f"data file `{path}` is not UTF-8 text (line {line}, byte {offset}: {raw[offset : offset + 1]!r}); "
            "re-encode it as UTF-8"
        ) from None


def _field_count_error(path: Path, fmt: str, line: int, got: int, header: list[str]) -> DataError:
    more = got > len(header)
    if fmt == "tsv":
        fix = (
            "a tab inside the text splits it: replace tabs in the text with spaces (TSV has no quoting) or use csv"
            if more
            else "separate the columns with one tab, or remove the line"
        )
    else:
        fix = (
            'quote text that contains commas ("a, b") or remove the extra commas'
            if more
            else 'fill in every column (quote text that contains commas or line breaks: "a, b")'
        )
    plural = "" if got == 1 else "s"
    return DataError(
        f"data file `{path}` line {line} has {got} field{plural} but the header has {len(header)} "
        f"({_names(header)}); {fix}"
    )


def _csv_hint(message: str) -> str:
    if "expected after" in message:
        return (
            ": text after a closing quote; a field that starts with a quote must be quoted whole, with inner quotes "
            'doubled ("say ""hi"" now")'
        )
    if "unexpected end of data" in message:
        return ": a quote is opened here and never closed"
    if "field larger than field limit" in message:
        return ": a field is too long (an unclosed quote, or a text over 131072 characters)"
    return ""


def _read_delimited(path: Path, fmt: str) -> _Table:
    text = _decode(path, fmt)
    if fmt == "tsv":  # GLUE-style: no quoting (sentences contain quotes)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:  # strict: an unclosed quote is an error, not a field that swallows the rest of the file
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    start = 1  # the line the next record starts on (a quoted csv field may span lines)
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row:  # a blank line
                continue
            if header is None:
                seen = set()
                for name in row:
                    if name in seen:
                        raise DataError(
                            f"data file `{path}` line {line}: the header has two columns named `{_show(name)}`; "
                            "rename one of them"
                        )
                    seen.add(name)
                header = row
            elif len(row) != len(header):
                raise _field_count_error(path, fmt, line, len(row), header)
            else:
                rows.append(row)
                lines.append(line)
    except csv.Error as err:
        raise _parse_error(path, fmt, f"line {start}: {err}{_csv_hint(str(err))}") from None
    if header is None:
        raise DataError(
            f"data file `{path}` is empty (blank lines only); it needs a header row and at least one example"
        )
    if not rows:
        raise DataError(f"data file `{path}` has a header but no rows; it needs at least one example")
    return _Table(fmt, {name: [row[j] for row in rows] for j, name in enumerate(header)}, len(rows), lines)


def _read_jsonl(path: Path) -> _Table:
    text = _decode(path, "jsonl")
    columns: dict[str, list[Any]] = {}
    lines: list[int] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip(" \t\r"):  # JSON whitespace only
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise _parse_error(path, "jsonl", f"line {number}, column {err.colno}: {err.msg}") from None
        except (ValueError, RecursionError) as err:  # integers over 4300 digits, deep nesting
            raise _parse_error(path, "jsonl", f"line {number}: {str(err).splitlines()[0][:120]}") from None
        if not isinstance(obj, dict):
            kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
                type(obj), "a number"
            )
            raise DataError(
                f"data file `{path}` line {number} is {kind}, not a JSON object; write one object per line, "
                'like {"text": "...", "label": 1}'
            )
        for key in obj:
            if key not in columns:
                columns[key] = [MISSING] * len(lines)
        for key, values in columns.items():
            values.append(obj.get(key, MISSING))
        lines.append(number)
    if not lines:
        raise DataError(f"data file `{path}` is empty (blank lines only); it needs one JSON object per example")
    return _Table("jsonl", columns, len(lines), lines)


def _unique(path: Path, names: Sequence[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"data file `{path}` has two columns named `{_show(name)}`; rename one of them")
        seen.add(name)


def _read_parquet(path: Path) -> _Table:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"data file `{path}` is parquet, which needs pyarrow; install it (pip install pyarrow) or convert the "
            "file to csv, tsv or jsonl"
        ) from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise _parse_error(path, "parquet", str(err).splitlines()[0][:200]) from None
    _unique(path, table.column_names)
    columns = {name: table.column(i).to_pylist() for i, name in enumerate(table.column_names)}
    return _Table("parquet", columns, table.num_rows, None)


def _read_saved(path: Path) -> _Table:
    # A `save_to_disk` directory has state.json (one split) or dataset_dict.json (several): checked before importing
    # datasets, so an edge install without it still says what is wrong with an ordinary directory.
    if not (path / "state.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise DataError(
            f"`{path}` is a directory but not a `save_to_disk` dataset (it has no state.json); pass a data file or a "
            "directory written by `Dataset.save_to_disk`"
        )
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"`{path}` is a `save_to_disk` dataset, which needs the `datasets` library; install it "
            "(pip install datasets) or export the dataset to a jsonl or csv file"
        ) from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError) as err:
        raise DataError(
            f"`{path}` is a directory but not a `save_to_disk` dataset ({str(err).splitlines()[0][:200]}); pass a "
            "data file or a directory written by `Dataset.save_to_disk`"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        raise DataError(
            f"`{path}` holds several splits ({_names(splits)}); pass one of them, e.g. `{path / splits[0]}`"
        )
    _unique(path, loaded.column_names)
    if len(loaded) == 0:
        return _Table("dataset", {name: [] for name in loaded.column_names}, 0, None)
    return _Table("dataset", loaded.with_format(None).to_dict(), len(loaded), None)


def _read_table(path: Path) -> _Table:
    if path.is_dir():
        table = _read_saved(path)
    else:
        suffix = path.suffix.lower()
        fmt = FORMATS.get(suffix)
        if fmt is None:
            raise DataError(
                f"data file `{path}` has an unknown format `{suffix or '(no extension)'}`; "
                f"use one of {', '.join(sorted(FORMATS))} or a `save_to_disk` directory"
            )
        if path.stat().st_size == 0:
            raise DataError(f"data file `{path}` is empty; it needs a header row and at least one example")
        if fmt == "parquet":
            table = _read_parquet(path)
        elif fmt == "jsonl":
            table = _read_jsonl(path)
        else:
            table = _read_delimited(path, fmt)
    if table.rows == 0:  # csv, tsv and jsonl have said so already
        raise DataError(f"data file `{path}` has no rows; it needs at least one example")
    return table


def _layout_hint(table: _Table) -> str:
    """A csv whose header holds tabs is a tsv (and the other way round): say so."""
    names = list(table.columns)
    if table.fmt == "csv" and len(names) == 1 and "\t" in names[0]:
        return " (the header has tabs: is this a tsv file? rename it to .tsv)"
    if table.fmt == "tsv" and len(names) == 1 and "," in names[0]:
        return " (the header has commas: is this a csv file? rename it to .csv)"
    return ""


def _texts(table: _Table, column: str, path: Path, flag: str) -> list[str]:
    """The column's values as strings; numbers become text, anything else that is not a string is an error."""
    out = []
    for i, value in enumerate(table.columns[column]):
        if isinstance(value, str):
            out.append(value)
            continue
        if value is MISSING:
            raise DataError(
                f"data file `{path}` line {table.lines[i]} has no key `{_show(column)}` (the text column); add it "
                f"or remove the line, or pass {flag}"
            )
        if value is None:
            problem = "no text (null)"
        elif not is_number(value):
            problem = f"a {type(value).__name__} instead of text"
        elif isinstance(value, float) and not math.isfinite(value):
            problem = f"a non-finite number ({value}) instead of text"
        else:
            out.append(str(value))  # numbers are text, as pandas' astype(str) made them
            continue
        raise DataError(
            f"data file `{path}`: column `{_show(column)}` has {problem} in {table.where(i)}; write the text as a "
            "string or remove the row"
        )
    return out


def load_data(
    path: str | Path,
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str = "label",
    id2label: dict[int, str] | None = None,
    require_labels: bool = True,
    max_rows: int | None = None,
    task: str = "auto",
) -> LabelledData:
    """Load a labelled file and map its labels to ids (classification) or read them as scores (regression).

    Args:
        text_column: column holding the text; default: the first of text, sentence, sentence1, content, review.
        id2label: an existing label map (from training data or the checkpoint); labels outside it are an error.
        require_labels: False for unlabelled text (all labels become -1).
        max_rows: keep at most this many rows (the whole file is still checked; for quick runs).
        task: `regression` reads the labels as float scores; `classification` as classes; `auto` decides from
            the labels (numbers, not all whole: regression) unless `id2label` is a classifier's map.
    """
    path = Path(path)
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"data file `{path}`: max_rows must be at least 1 or None, not {max_rows}")
    if task not in TASKS:
        raise ConfigError(f"`task` must be one of {', '.join(TASKS)}; got {task!r}")
    if not path.exists():
        raise DataError(f"data file `{path}` not found; pass a csv, tsv, jsonl or parquet file or a dataset directory")
    table = _read_table(path)
    columns = list(table.columns)
    if text_column is None:
        text_column = next((c for c in TEXT_CANDIDATES if c in columns), None)
        if text_column is None:
            raise DataError(
                f"data file `{path}`: no text column found (looked for {', '.join(TEXT_CANDIDATES)}); "
                f"columns are {_names(columns)}{_layout_hint(table)}; pass --text-column"
            )
    for role, col in (("text", text_column), ("text pair", text_pair_column)):
        if col is not None and col not in columns:
            flag = "--text-column" if role == "text" else "--text-pair-column"
            raise DataError(
                f"data file `{path}` has no {role} column `{_show(col)}`; columns are {_names(columns)}"
                f"{_layout_hint(table)}; pass {flag}"
            )
    if require_labels and label_column not in columns:
        raise DataError(
            f"data file `{path}` has no label column `{_show(label_column)}`; columns are {_names(columns)}"
            f"{_layout_hint(table)}; pass --label-column"
        )
    if max_rows is not None:
        table = table.head(max_rows)
    texts = _texts(table, text_column, path, "--text-column")
    pairs = None if text_pair_column is None else _texts(table, text_pair_column, path, "--text-pair-column")
    cols = {"text": text_column, "text_pair": text_pair_column, "label": label_column if require_labels else None}
    if not require_labels:
        return LabelledData(texts, [-1] * len(texts), id2label or {}, path, pairs, cols)
    values = table.columns[label_column]
    if task == REGRESSION or (task == "auto" and _continuous(values)):
        if id2label is not None and len(id2label) != 1:
            raise _regression_for_classifier(path, label_column, table, values, id2label)
        scores = [_check_score(v, path, label_column, table, i) for i, v in enumerate(values)]
        logger.info("loaded %d rows from %s (regression scores)", len(texts), path)
        return LabelledData(texts, scores, dict(REGRESSION_LABELS), path, pairs, cols, REGRESSION)
    keys = [_check_label(v, path, label_column, table, i) for i, v in enumerate(values)]
    id2label, ids = _map_labels(keys, id2label, path, label_column)
    logger.info("loaded %d rows from %s (%d labels)", len(texts), path, len(id2label))
    return LabelledData(texts, ids, id2label, path, pairs, cols)


def _number(value: Any) -> float | None:
    """A label as a finite float when it is a number or spells one ("3.8"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        return None
    return number if math.isfinite(number) else None


def _continuous(values: list[Any]) -> bool:
    """Every label is a number and at least one is not a whole number: scores, not classes."""
    numbers = [_number(v) for v in values]
    return all(n is not None for n in numbers) and any(not n.is_integer() for n in numbers)  # type: ignore[union-attr]


def _check_score(value: Any, path: Path, column: str, table: _Table, i: int) -> float:
    """A regression label as a float; anything that is not a finite number is an error naming its row."""
    if value is MISSING:
        raise DataError(
            f"data file `{path}` line {table.lines[i]} has no key `{_show(column)}` (the label column); add it or "
            "remove the line, or pass --label-column"
        )
    number = _number(value)
    if number is None:
        shown = "an empty label" if value is None or str(value).strip() in EMPTY_LABELS else f"`{_show(value)}`"
        raise DataError(
            f"data file `{path}`: column `{_show(column)}` has {shown} in {table.where(i)}, not a number; a "
            "regression task needs a numeric score in every row"
        )
    return number


def _regression_for_classifier(
    path: Path, column: str, table: _Table, values: list[Any], id2label: dict[int, str]
) -> DataError:
    i = next((i for i, v in enumerate(values) if (n := _number(v)) is not None and not n.is_integer()), 0)
    return DataError(
        f"data file `{path}`: column `{_show(column)}` holds scores ({_show(values[i])} in {table.where(i)}), "
        f"regression data, but the model classifies into {len(id2label)} labels "
        f"({_names([str(v) for v in id2label.values()][:5])}); start from a base encoder or a regression "
        "checkpoint (one output), or use class labels"
    )


def _label_key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _check_label(value: Any, path: Path, column: str, table: _Table, i: int) -> str:
    """The label as its key string (1.0 → "1"); null, empty, boolean, non-finite and non-scalar labels are errors."""
    col, where = _show(column), table.where(i)
    if value is MISSING:
        raise DataError(
            f"data file `{path}` line {table.lines[i]} has no key `{col}` (the label column); add it or remove the "
            "line, or pass --label-column"
        )
    if value is not None and not isinstance(value, str):
        if isinstance(value, bool):
            raise DataError(
                f"data file `{path}`: column `{col}` has a boolean label ({str(value).lower()}) in {where}; "
                "use 0/1 or label names"
            )
        if not isinstance(value, (int, float)):
            raise DataError(
                f"data file `{path}`: column `{col}` has a {type(value).__name__} as label in {where}; labels must "
                "be strings or integers"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise DataError(
                f"data file `{path}`: column `{col}` has a non-finite label ({value}) in {where}; use an integer "
                "or a label name"
            )
    key = "" if value is None else _label_key(value)
    if key in EMPTY_LABELS:
        raise DataError(
            f"data file `{path}`: column `{col}` has an empty label in {where}; fill it in or remove the row"
        )
    return key


def _map_labels(
    keys: list[str], id2label: dict[int, str] | None, path: Path, column: str
) -> tuple[dict[int, str], list[int]]:
    """Label ids for checked label keys: integer labels 0..n-1 keep their ids, others are sorted (or `id2label`'s)."""
    if id2label is None:
        distinct = sorted(set(keys), key=lambda k: (not _INT.fullmatch(k), int(k) if _INT.fullmatch(k) else 0, k))
        if all(_INT.fullmatch(k) for k in distinct) and [int(k) for k in distinct] == list(range(len(distinct))):
            id2label = {int(k): k for k in distinct}  # integer labels 0..n-1 keep their ids
        else:
            id2label = dict(enumerate(distinct))
    label2id = {str(v): int(k) for k, v in id2label.items()}
    if set(keys) - set(label2id) and all(_NATURAL.fullmatch(k) and int(k) in id2label for k in keys):
        label2id = {k: int(k) for k in set(keys)}  # integer labels are the model's label ids
    unseen = sorted(set(keys) - set(label2id))
    if unseen:
        raise DataError(
            f"data file `{path}`: column `{_show(column)}` has label(s) {_names(unseen[:5])} that the model does not "
            f"know (known: {_names(list(label2id))}); remove those rows or train on data that has every label"
        )
    return {int(k): str(v) for k, v in id2label.items()}, [label2id[k] for k in keys]


def check_trainable(data: LabelledData) -> None:
    """Training needs at least two classes (or, for regression, two different scores)."""
    present = set(data.labels)
    if data.is_regression:
        if len(present) < 2:
            raise DataError(
                f"data file `{data.path}` has the same score in every row ({next(iter(present), '?')}); "
                "a regression needs examples with different scores"
            )
        return
    if len(present) < 2:
        raise DataError(
            f"data file `{data.path}` has a single class ({data.id2label.get(next(iter(present)), '?')}); "
            "a classifier needs examples of at least two labels"
        )


def check_matches_model(data: LabelledData, model_num_labels: int, model_path: str) -> None:
    """The checkpoint's classifier must have as many outputs as the data has labels; regression data needs a
    one-output (regression) head, and a one-output head needs regression data."""
    if data.is_regression and model_num_labels != 1:
        raise DataError(
            f"data file `{data.path}` has regression scores but the checkpoint `{model_path}` classifies into "
            f"{model_num_labels} labels; start from a base encoder or a regression checkpoint (one output)"
        )
    if not data.is_regression and model_num_labels == 1:
        raise DataError(
            f"data file `{data.path}` has class labels ({_names(list(data.id2label.values())[:5])}) but the "
            f"checkpoint `{model_path}` is a regression model (one output); give numeric scores, with --task "
            "regression when they are whole numbers"
        )
    if data.num_labels != model_num_labels:
        raise DataError(
            f"data file `{data.path}` has {data.num_labels} labels but the checkpoint `{model_path}` classifies "
            f"into {model_num_labels}; use data with the same label set or start from a base encoder"
        )
