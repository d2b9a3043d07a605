"""Property tests of compressor.data: generated and damaged csv/tsv/jsonl files either load or raise a DataError.

A load that succeeds must be consistent (as many labels as texts, every label id in the map); a load that fails must
raise a `CompressorError` whose message is one line naming the file, never another exception. Round trips: rows
written with the csv module or json load back unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compressor.data import EMPTY_LABELS, LabelledData, load_data
from compressor.errors import CompressorError

# No example database: it would be a `.hypothesis` directory in the work tree.
FUZZ = settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Characters that break naive readers, mixed with anything else.
TRICKY = list("\t\n\r,\"' \\{}[]:\ufeff\x00\x0b\x1c\u2028é") + ["nan", "None", "1", "0", "-1", "²"]
texts = st.lists(st.one_of(st.sampled_from(TRICKY), st.characters(), st.text(max_size=4)), max_size=6).map("".join)
names = st.one_of(st.sampled_from(["text", "sentence", "label", "pair", "y", ""]), st.text(max_size=5))
raw_labels: st.SearchStrategy[Any] = st.one_of(
    st.integers(-2, 4),
    st.sampled_from(["0", "1", "2", " 1 ", "pos", "neg", "", "nan", "None", "1.0", "²"]),
    st.text(max_size=4),
    st.floats(),
    st.booleans(),
    st.none(),
)
NASTY_BYTES = [b"\t", b",", b'"', b"\n", b"\r", b"\r\n", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\x00", b"{", b"}", b":"]
edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "truncate"]),
        st.floats(0, 1),
        st.one_of(st.sampled_from(NASTY_BYTES), st.binary(min_size=1, max_size=3)),
    ),
    max_size=3,
)
label_maps = st.sampled_from([None, {0: "0", 1: "1"}, {0: "neg", 1: "pos"}, {1: "b", 0: "a", 2: "c"}])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _damage(data: bytes, changes: list[tuple[str, float, bytes]]) -> bytes:
    for kind, where, chunk in changes:
        at = int(where * len(data))
        if kind == "insert":
            data = data[:at] + chunk + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + len(chunk) :]
        else:
            data = data[:at]
    return data


def _delimited(fmt: str, header: list[str], rows: list[list[Any]], quoting: int) -> bytes:
    if fmt == "tsv":  # written as GLUE writes it: no quoting, whatever the fields hold
        body = "".join("\t".join(str(f) for f in row) + "\n" for row in [header, *rows])
    else:
        out = io.StringIO(newline="")
        writer = csv.writer(out, quoting=quoting)
        for row in [header, *rows]:
            writer.writerow(row)
        body = out.getvalue()
    return body.encode("utf-8", "surrogatepass")


def _load(path: Path, options: dict[str, Any]) -> LabelledData | None:
    """`load_data`, checked: a consistent result, or a one-line CompressorError naming the file (None)."""
    try:
        data = load_data(path, **options)
    except CompressorError as err:
        message = str(err)
        assert "\n" not in message and "\r" not in message, message
        assert str(path) in message, message
        return None
    n = len(data)
    assert n >= 1
    assert len(data.texts) == len(data.labels) == n
    assert all(isinstance(t, str) for t in data.texts)
    assert data.text_pairs is None or (len(data.text_pairs) == n and all(isinstance(t, str) for t in data.text_pairs))
    if data.is_regression:  # numeric labels, not all whole numbers: scores (compressor/task.py)
        assert options.get("require_labels", True) and options.get("task", "auto") != "classification"
        assert all(isinstance(y, float) and math.isfinite(y) for y in data.labels)
        assert data.id2label == {0: "LABEL_0"} and (options.get("id2label") is None or len(options["id2label"]) == 1)
    elif options.get("require_labels", True):
        assert all(isinstance(y, int) for y in data.labels)
        assert all(y in data.id2label for y in data.labels)
        if options.get("id2label") is None:  # a map built from the data: ids 0..n-1, every one used
            assert sorted(data.id2label) == list(range(data.num_labels)) == sorted(set(data.labels))
    else:
        assert data.labels == [-1] * n
    part = data.sample(max(1, n // 2), seed=n)
    assert set(part.texts) <= set(data.texts) and len(part) == max(1, n // 2)
    return data


@st.composite
def options(draw: st.DrawFn, columns: list[str]) -> dict[str, Any]:
    """load_data keyword arguments, mostly naming columns that exist."""
    pick = st.sampled_from(columns) if columns else names
    opts: dict[str, Any] = {
        "text_column": draw(st.one_of(st.none(), pick, names)),
        "label_column": draw(st.one_of(st.just("label"), pick)),
        "require_labels": draw(st.booleans()),
        "id2label": draw(label_maps),
    }
    if draw(st.integers(0, 4)) == 0:
        opts["text_pair_column"] = draw(st.one_of(pick, names))
    if draw(st.integers(0, 4)) == 0:
        opts["max_rows"] = draw(st.integers(-1, 5))
    return opts


@FUZZ
@given(
    fmt=st.sampled_from(["csv", "tsv"]),
    header=st.one_of(st.just(["sentence", "label"]), st.lists(names, max_size=4)),
    cells=st.lists(st.lists(st.one_of(texts, raw_labels), max_size=4), max_size=6),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    changes=edits,
    data=st.data(),
)
def test_delimited_files_load_or_refuse(
    folder: Path, fmt: str, header: list[str], cells: list[list[Any]], quoting: int, changes: list, data: st.DataObject
) -> None:
    rows = [(row + ["1"] * len(header))[: len(header)] if len(row) % 3 else row for row in cells]  # mostly well-formed
    path = folder / f"fuzz.{fmt}"
    path.write_bytes(_damage(_delimited(fmt, header, rows, quoting), changes))
    _load(path, data.draw(options(header)))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts), lambda inner: st.lists(inner, max_size=2)
)


@FUZZ
@given(
    rows=st.lists(
        st.one_of(
            st.fixed_dictionaries({"text": st.one_of(texts, json_values), "label": raw_labels}),
            st.dictionaries(names, json_values, max_size=3),
            json_values,
            texts,  # a line that is not JSON at all
        ),
        max_size=6,
    ),
    ascii_only=st.booleans(),
    changes=edits,
    data=st.data(),
)
def test_jsonl_files_load_or_refuse(
    folder: Path, rows: list[Any], ascii_only: bool, changes: list, data: st.DataObject
) -> None:
    lines = [r.replace("\n", " ") if isinstance(r, str) else json.dumps(r, ensure_ascii=ascii_only) for r in rows]
    path = folder / "fuzz.jsonl"
    path.write_bytes(_damage("\n".join(lines).encode("utf-8", "surrogatepass"), changes))
    _load(path, data.draw(options(["text", "label"])))


@FUZZ
@given(
    suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]),
    prefix=st.sampled_from([b"", b"sentence\tlabel\n", b"sentence,label\n", b'{"text": "a", "label": 1}\n']),
    body=st.binary(max_size=60),
    data=st.data(),
)
def test_random_bytes_load_or_refuse(
    folder: Path, suffix: str, prefix: bytes, body: bytes, data: st.DataObject
) -> None:
    path = folder / f"bytes{suffix}"
    path.write_bytes(prefix + body)
    _load(path, data.draw(options(["sentence", "text", "label"])))


# Labels that survive as written: no surrounding spaces (they are stripped) and not a spelling of "missing".
clean_labels = st.one_of(
    st.integers(-3, 12).map(str),
    st.text(st.characters(exclude_categories=["Cs", "Zs", "Cc"]), min_size=1, max_size=4),
).filter(lambda s: s == s.strip() and s not in EMPTY_LABELS)


def _check_round_trip(data: LabelledData, want_texts: list[str], want_labels: list[str]) -> None:
    assert data.texts == want_texts
    assert [data.id2label[y] for y in data.labels] == want_labels
    if {int(y) for y in want_labels if y.isascii() and y.isdigit()} == set(range(len(set(want_labels)))):
        assert data.labels == [int(y) for y in want_labels]  # integer labels 0..n-1 keep their ids


@ROUND_TRIP
@given(
    rows=st.lists(st.tuples(st.text(max_size=30), clean_labels), min_size=1, max_size=8),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    bom=st.booleans(),
)
def test_csv_round_trip(folder: Path, rows: list[tuple[str, str]], quoting: int, bom: bool) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, quoting=quoting)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    path = folder / "round.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8"))
    _check_round_trip(load_data(path), [t for t, _ in rows], [y for _, y in rows])


@ROUND_TRIP
@given(
    rows=st.lists(
        st.tuples(
            st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\t\n\r"), max_size=30), clean_labels
        ),
        min_size=1,
        max_size=8,
    )
)
def test_tsv_round_trip(folder: Path, rows: list[tuple[str, str]]) -> None:
    path = folder / "round.tsv"
    path.write_bytes(("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows)).encode("utf-8"))
    _check_round_trip(load_data(path), [t for t, _ in rows], [y for _, y in rows])


@ROUND_TRIP
@given(
    rows=st.lists(
        st.tuples(st.text(max_size=30), st.one_of(clean_labels, st.integers(0, 5)), st.text(max_size=10)),
        min_size=1,
        max_size=8,
    ),
    ascii_only=st.booleans(),
)
def test_jsonl_round_trip(folder: Path, rows: list[tuple[str, str | int, str]], ascii_only: bool) -> None:
    path = folder / "round.jsonl"
    lines = [json.dumps({"text": t, "pair": p, "label": y}, ensure_ascii=ascii_only) for t, y, p in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    data = load_data(path, text_pair_column="pair")
    _check_round_trip(data, [t for t, _, _ in rows], [str(y) for _, y, _ in rows])
    assert data.text_pairs == [p for _, _, p in rows]
