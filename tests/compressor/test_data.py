"""compressor.data: the standard-library csv/tsv/jsonl readers, their error messages, labels and LabelledData."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compressor.data import LabelledData, load_data
from compressor.errors import ConfigError, DataError

ROOT = Path(__file__).parents[2]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, *rows: object) -> Path:
    return _write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _error(path: Path, **kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        load_data(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert f"`{path}`" in message
    return message


# --- tsv ---------------------------------------------------------------------------------------------------------


def test_tsv_is_glue_style(tmp_path: Path) -> None:
    data = load_data(_write(tmp_path / "d.tsv", 'sentence\tlabel\nhe said "hi\t1\n\'twas "fine"\t0\n'))
    assert data.texts == ['he said "hi', '\'twas "fine"']
    assert data.labels == [1, 0]
    assert data.text_pairs is None


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("not\ta great movie\t1\nbad\tand dull\t0\n", 2),  # every row: pandas silently made "not" the index
        ("not\ta great movie\t1\nawful\t0\n", 2),  # first row only: pandas blamed an empty label in row 2
        ("great\t1\nawful\t0\nnot\ta great movie\t1\n", 4),
    ],
    ids=["every-row", "first-row", "last-row"],
)
def test_tsv_tab_inside_text(tmp_path: Path, body: str, line: int) -> None:
    message = _error(_write(tmp_path / "d.tsv", "sentence\tlabel\n" + body))
    assert f"line {line} has 3 fields but the header has 2 (sentence, label)" in message
    assert "a tab inside the text splits it" in message
    assert "empty label" not in message


def test_tsv_missing_field(tmp_path: Path) -> None:
    message = _error(_write(tmp_path / "d.tsv", "sentence\tlabel\ngreat\t1\nawful 0\n"))
    assert "line 3 has 1 field but the header has 2" in message
    assert "separate the columns with one tab" in message


# --- csv ---------------------------------------------------------------------------------------------------------


def test_csv_standard_quoting(tmp_path: Path) -> None:
    text = 'sentence,label\n"a, b",1\n"say ""hi""",0\n"two\nlines",1\nplain "quote" inside,0\n'
    data = load_data(_write(tmp_path / "d.csv", text))
    assert data.texts == ["a, b", 'say "hi"', "two\nlines", 'plain "quote" inside']
    assert data.labels == [1, 0, 1, 0]


def test_csv_unclosed_quote_names_its_line(tmp_path: Path) -> None:
    message = _error(_write(tmp_path / "bad.csv", 'sentence,label\ngood,1\n"a great movie,1\nbad,0\n'))
    assert "cannot be parsed as csv (line 3: unexpected end of data" in message
    assert "never closed" in message and "fix the file" in message


def test_csv_text_after_closing_quote(tmp_path: Path) -> None:
    message = _error(_write(tmp_path / "bad.csv", 'sentence,label\n"great" movie,1\n'))
    assert "line 2" in message and "text after a closing quote" in message


def test_csv_extra_field(tmp_path: Path) -> None:
    message = _error(_write(tmp_path / "d.csv", "sentence,label\ngreat,1\nslow, but fine,1\n"))
    assert "line 3 has 3 fields but the header has 2 (sentence, label)" in message
    assert 'quote text that contains commas ("a, b")' in message


def test_lines_count_multiline_fields_and_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", 'sentence,label\n\n"one\ntwo",1\n\nthree,\n')
    assert "has an empty label in row 2 (line 6)" in _error(path)


def test_csv_that_is_a_tsv(tmp_path: Path) -> None:
    message = _error(_write(tmp_path / "d.csv", "sentence\tlabel\ngreat\t1\n"))
    assert "no text column found" in message
    assert "columns are sentence\\tlabel (the header has tabs: is this a tsv file? rename it to .tsv)" in message


# --- shared text-file rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["d.csv", "d.tsv"])
def test_empty_label_names_row_and_line(tmp_path: Path, name: str) -> None:
    sep = "," if name.endswith("csv") else "\t"
    path = _write(tmp_path / name, f"sentence{sep}label\n\ngreat{sep}1\nawful{sep} \n")
    message = _error(path)
    assert "column `label` has an empty label in row 2 (line 4); fill it in or remove the row" in message


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.jsonl"])
def test_non_utf8_names_line_and_byte(tmp_path: Path, name: str) -> None:
    if name.endswith("jsonl"):
        text = '{"text": "ok", "label": 1}\n\n{"text": "café", "label": 0}\n'
    else:
        sep = "," if name.endswith("csv") else "\t"
        text = f"sentence{sep}label\nok{sep}1\ncafé{sep}0\n"
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    offset = text.index("é")
    assert f"is not UTF-8 text (line 3, byte {offset}: b'\\xe9'); re-encode it as UTF-8" in _error(path)


def test_non_utf8_after_a_bom_counts_the_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_bytes(b"\xef\xbb\xbfsentence\tlabel\n\xff\t1\n")
    assert "(line 2, byte 18: b'\\xff')" in _error(path)


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.jsonl"])
def test_bom_is_accepted(tmp_path: Path, name: str) -> None:
    if name.endswith("jsonl"):
        text = '{"sentence": "great", "label": 1}\n{"sentence": "bad", "label": 0}\n'
    else:
        sep = "," if name.endswith("csv") else "\t"
        text = f"sentence{sep}label\ngreat{sep}1\nbad{sep}0\n"
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    data = load_data(path)
    assert data.columns["text"] == "sentence"
    assert data.texts == ["great", "bad"]


def test_crlf_line_endings(tmp_path: Path) -> None:
    data = load_data(_write(tmp_path / "d.tsv", "sentence\tlabel\r\ngreat\t1\r\nbad\t0\r\n"))
    assert data.texts == ["great", "bad"] and data.id2label == {0: "0", 1: "1"}


@pytest.mark.parametrize("name", ["d.csv", "d.tsv"])
def test_duplicate_header(tmp_path: Path, name: str) -> None:
    sep = "," if name.endswith("csv") else "\t"
    message = _error(_write(tmp_path / name, f"sentence{sep}label{sep}label\ngreat{sep}1{sep}0\n"))
    assert "line 1: the header has two columns named `label`; rename one of them" in message


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("d.tsv", "", "is empty; it needs a header row and at least one example"),
        ("d.tsv", "\n\n", "is empty (blank lines only); it needs a header row and at least one example"),
        ("d.csv", "sentence,label\n\n", "has a header but no rows; it needs at least one example"),
        ("d.jsonl", "\n \n", "is empty (blank lines only); it needs one JSON object per example"),
    ],
)
def test_empty_files(tmp_path: Path, name: str, text: str, expected: str) -> None:
    assert expected in _error(_write(tmp_path / name, text))


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    assert "unknown format `.xlsx`" in _error(_write(tmp_path / "d.xlsx", "x"))
    assert "not found; pass a csv, tsv, jsonl or parquet file" in _error(tmp_path / "nope.tsv")


def test_column_names_with_control_characters_stay_on_one_line(tmp_path: Path) -> None:
    message = _error(_write(tmp_path / "d.csv", '"a\nb",label\nx,1\n'))
    assert "columns are a\\nb, label" in message


# --- jsonl -------------------------------------------------------------------------------------------------------


def test_jsonl_values(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        {"text": "great", "label": 1.0, "extra": [1]},
        "",
        {"label": 0, "text": 42},
        {"text": 0.5, "label": "1"},
    )
    data = load_data(path)
    assert data.texts == ["great", "42", "0.5"]  # numbers are text, as `str()` writes them
    assert data.labels == [1, 0, 1]
    assert data.id2label == {0: "0", 1: "1"}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (['{"text": "a", "label": 1}', "{not json"], "cannot be parsed as jsonl (line 2, column 2: Expecting"),
        (['{"text": "a", "label": 1}', "[1, 2]"], "line 2 is an array, not a JSON object; write one object per line"),
        (['"just text"'], "line 1 is a string, not a JSON object"),
        ([{"text": "a", "label": 1}, {"label": 0}], "line 2 has no key `text` (the text column)"),
        ([{"text": "a", "label": 1}, {"text": "b"}], "line 2 has no key `label` (the label column)"),
        ([{"text": "a", "label": 1}, {"text": None, "label": 0}], "has no text (null) in row 2 (line 2)"),
        ([{"text": True, "label": 0}], "column `text` has a bool instead of text in row 1 (line 1)"),
        ([{"text": ["a"], "label": 0}], "column `text` has a list instead of text in row 1"),
        (["", {"text": "a", "label": None}], "column `label` has an empty label in row 1 (line 2)"),
        ([{"text": "a", "label": True}], "has a boolean label (true) in row 1 (line 1); use 0/1 or label names"),
        (['{"text": "a", "label": NaN}'], "has a non-finite label (nan) in row 1 (line 1)"),
        (['{"text": "a", "label": Infinity}'], "has a non-finite label (inf)"),
        ([{"text": "a", "label": {"x": 1}}], "has a dict as label in row 1 (line 1); labels must be strings"),
    ],
    ids=[
        "bad-json",
        "array",
        "string",
        "no-text",
        "no-label",
        "null-text",
        "bool-text",
        "list-text",
        "null-label",
        "bool-label",
        "nan-label",
        "inf-label",
        "dict-label",
    ],
)
def test_jsonl_errors(tmp_path: Path, rows: list[object], expected: str) -> None:
    assert expected in _error(_jsonl(tmp_path / "d.jsonl", *rows))


def test_jsonl_missing_label_is_fine_without_labels(tmp_path: Path) -> None:
    data = load_data(_jsonl(tmp_path / "d.jsonl", {"text": "a", "label": 1}, {"text": "b"}), require_labels=False)
    assert data.texts == ["a", "b"] and data.labels == [-1, -1] and data.id2label == {}


# --- labels ------------------------------------------------------------------------------------------------------


def test_integer_labels_keep_their_ids(tmp_path: Path) -> None:
    data = load_data(_write(tmp_path / "d.tsv", "sentence\tlabel\na\t2\nb\t0\nc\t1\n"))
    assert data.labels == [2, 0, 1] and data.id2label == {0: "0", 1: "1", 2: "2"}


def test_other_labels_are_sorted(tmp_path: Path) -> None:
    data = load_data(_write(tmp_path / "d.tsv", "sentence\tlabel\na\tpos\nb\tneg\nc\t 10 \nd\t3\n"))
    assert data.id2label == {0: "3", 1: "10", 2: "neg", 3: "pos"}
    assert data.labels == [3, 2, 1, 0]


def test_known_label_map(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.tsv", "sentence\tlabel\na\tpositive\nb\tnegative\n")
    data = load_data(path, id2label={0: "negative", 1: "positive"})
    assert data.labels == [1, 0]
    ints = load_data(_write(tmp_path / "i.tsv", "sentence\tlabel\na\t1\nb\t0\n"), id2label={0: "neg", 1: "pos"})
    assert ints.labels == [1, 0]  # integer labels are the model's ids
    message = _error(path, id2label={0: "bad", 1: "good"})
    assert "has label(s) negative, positive that the model does not know (known: bad, good)" in message


@pytest.mark.parametrize("odd", ["²", "١", "--1", "-", "0x1", "1e3"])
def test_odd_numeric_labels_do_not_crash(tmp_path: Path, odd: str) -> None:
    data = load_data(_write(tmp_path / "d.tsv", f"sentence\tlabel\na\t{odd}\nb\t0\nc\t1\n"))
    assert data.id2label[data.labels[0]] == odd
    assert sorted(data.id2label) == list(range(3))


def test_nan_and_none_strings_are_empty_labels(tmp_path: Path) -> None:
    # pandas' spelling of a missing value; the old reader refused these, so the new one does too
    assert "empty label in row 1 (line 2)" in _error(_write(tmp_path / "d.csv", "text,label\na,nan\nb,1\n"))


# --- columns, pairs, other formats -------------------------------------------------------------------------------


def test_columns_and_pairs(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "q,a,y\nwho,me,yes\nwhy,because,no\n")
    data = load_data(path, text_column="q", text_pair_column="a", label_column="y")
    assert data.texts == ["who", "why"] and data.text_pairs == ["me", "because"]
    assert data.id2label == {0: "no", 1: "yes"} and data.labels == [1, 0]
    assert data.columns == {"text": "q", "text_pair": "a", "label": "y"}
    assert "has no text pair column `b`; columns are q, a, y; pass --text-pair-column" in _error(
        path, text_column="q", text_pair_column="b", label_column="y"
    )


def test_max_rows_checks_the_whole_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.tsv", "sentence\tlabel\na\t1\nb\t0\nc\t1\n")
    assert load_data(path, max_rows=2).texts == ["a", "b"]
    broken = _write(tmp_path / "e.tsv", "sentence\tlabel\na\t1\nb\t0\nc\td\t1\n")
    assert "line 4 has 3 fields" in _error(broken, max_rows=1)


def test_max_rows_below_one_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_rows must be at least 1"):
        load_data(_write(tmp_path / "d.tsv", "sentence\tlabel\na\t1\n"), max_rows=0)


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"sentence": ["a", "b", None], "label": [1, 0, 1]}), path)
    assert "has no text (null) in row 3;" in _error(path)
    pq.write_table(pa.table({"sentence": ["a", "b"], "label": [1.0, 0.0]}), path)
    data = load_data(path)
    assert data.texts == ["a", "b"] and data.labels == [1, 0]
    _write(tmp_path / "bad.parquet", "not parquet")
    assert "cannot be parsed as parquet" in _error(tmp_path / "bad.parquet")


def test_save_to_disk_directory(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]})
    ds.save_to_disk(str(tmp_path / "one"))
    data = load_data(tmp_path / "one")
    assert data.texts == ["a", "b", "c"] and data.labels == [0, 1, 0]
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "two"))
    message = _error(tmp_path / "two")
    assert "holds several splits (train, test); pass one of them" in message
    (tmp_path / "empty").mkdir()
    assert "is a directory but not a `save_to_disk` dataset" in _error(tmp_path / "empty")


def test_missing_libraries_say_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pyarrow", "pyarrow.parquet", "datasets"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError, as on the edge install
    _write(tmp_path / "d.parquet", "x")
    assert "is parquet, which needs pyarrow; install it (pip install pyarrow)" in _error(tmp_path / "d.parquet")
    (tmp_path / "ds").mkdir()
    _write(tmp_path / "ds" / "state.json", "{}")
    assert "needs the `datasets` library; install it (pip install datasets)" in _error(tmp_path / "ds")
    data = load_data(_write(tmp_path / "d.tsv", "sentence\tlabel\na\t1\nb\t0\n"))
    assert data.sample(1, seed=0).texts in (["a"], ["b"])
    with pytest.raises(DataError, match="pip install datasets"):
        data.to_dataset()


def test_text_formats_import_no_heavy_library(tmp_path: Path) -> None:
    _write(tmp_path / "d.tsv", "sentence\tlabel\na\t1\nb\t0\n")
    _write(tmp_path / "d.csv", "sentence,label\na,1\nb,0\n")
    _jsonl(tmp_path / "d.jsonl", {"text": "a", "label": 1}, {"text": "b", "label": 0})
    code = (
        "import sys\n"
        "from compressor.data import load_data\n"
        "for name in ('d.tsv', 'd.csv', 'd.jsonl'):\n"
        "    load_data(name).sample(1, seed=3).head(1)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'datasets', 'pyarrow', 'torch'})\n"
        "assert not heavy, heavy\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert run.returncode == 0, run.stderr


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


# --- LabelledData ------------------------------------------------------------------------------------------------


def _labelled(n: int, pairs: bool = False) -> LabelledData:
    texts = [f"text {i}" for i in range(n)]
    return LabelledData(
        texts, [i % 3 for i in range(n)], {0: "a", 1: "b", 2: "c"}, Path("x.tsv"), texts[::-1] if pairs else None
    )


def test_head_and_sample_shapes() -> None:
    data = _labelled(10, pairs=True)
    assert len(data) == 10 and data.num_labels == 3
    assert data.head(None) is data and data.head(10) is data and data.sample(None) is data and data.sample(11) is data
    head = data.head(3)
    assert head.texts == ["text 0", "text 1", "text 2"] and head.labels == [0, 1, 2]
    assert head.text_pairs == ["text 9", "text 8", "text 7"]
    assert head.id2label is data.id2label and head.path == data.path
    assert len(data.head(0)) == 0 and len(data.sample(0)) == 0
    sample = data.sample(4, seed=1)
    assert len(sample) == 4 and len(set(sample.texts)) == 4
    assert sample.texts == data.sample(4, seed=1).texts
    assert all(data.texts.index(t) % 3 == y for t, y in zip(sample.texts, sample.labels, strict=True))
    assert all(p == f"text {9 - int(t.split()[1])}" for t, p in zip(sample.texts, sample.text_pairs, strict=True))


@pytest.mark.parametrize(("size", "n"), [(2, 1), (7, 3), (100, 10), (1000, 999), (5000, 64)])
@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1])
def test_sample_matches_datasets_shuffle(size: int, n: int, seed: int) -> None:
    datasets = pytest.importorskip("datasets")
    data = _labelled(size, pairs=True)
    old = datasets.Dataset.from_dict({"text": data.texts, "label": data.labels}).shuffle(seed=seed).select(range(n))
    new = data.sample(n, seed=seed)
    assert new.texts == list(old["text"])
    assert new.labels == list(old["label"])


def test_to_dataset_and_dataset_property() -> None:
    pytest.importorskip("datasets")
    plain = _labelled(4).to_dataset()
    assert plain.column_names == ["text", "label"]
    assert plain.features["label"].dtype == "int64"
    data = _labelled(4, pairs=True)
    ds = data.dataset
    assert ds.column_names == ["text", "text_pair", "label"]
    assert ds["text"][:] == data.texts and ds["text_pair"][:] == data.text_pairs and ds["label"][:] == data.labels
    assert data.dataset is ds  # built once
    assert data.head(2).dataset["text"][:] == data.texts[:2]
