"""Bad data files: missing, empty, unreadable, wrong columns, labels that do not fit the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.robustness.harness import expect_refusal


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_data_file_missing(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", tmp_path / "train.tsv", "--out", out, "-q")
    expect_refusal(
        result,
        case="data file does not exist",
        code=1,
        problem="not found",
        fix="pass a csv, tsv, jsonl or parquet file",
        out=out,
    )


def test_empty_data_file(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", _write(tmp_path / "train.tsv", ""), "--out", out, "-q")
    expect_refusal(
        result,
        case="empty data file (0 bytes)",
        code=1,
        problem="is empty",
        fix="needs a header row and at least one example",
        out=out,
    )


def test_header_only_data_file(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("analyse", ckpt, "--data", _write(tmp_path / "val.tsv", "sentence\tlabel\n"), "--out", out, "-q")
    expect_refusal(
        result,
        case="data file with a header and no rows",
        code=1,
        problem="has a header but no rows",
        fix="needs at least one example",
        out=out,
    )


def test_unknown_file_format(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    result = cli("analyse", ckpt, "--data", _write(tmp_path / "train.xlsx", "x"), "--out", out, "-q")
    expect_refusal(
        result,
        case="unknown data format (.xlsx)",
        code=1,
        problem="unknown format `.xlsx`",
        fix="use one of .csv",
        out=out,
    )


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("bad.jsonl", '{"sentence": "a", "label": 1}\n{not json\n', "jsonl"),
        ("bad.csv", 'sentence,label\n"a great movie,1\nbad,0\n', "csv"),
    ],
    ids=["jsonl", "csv"],
)
def test_malformed_file(cli, tmp_path: Path, ckpt: Path, name: str, text: str, fmt: str) -> None:
    out = tmp_path / "out"
    result = cli("analyse", ckpt, "--data", _write(tmp_path / name, text), "--out", out, "-q")
    expect_refusal(
        result, case=f"malformed {fmt} file", code=1, problem=f"cannot be parsed as {fmt}", fix="fix the file", out=out
    )


def test_directory_that_is_not_a_dataset(cli, tmp_path: Path, ckpt: Path) -> None:
    (tmp_path / "data").mkdir()
    out = tmp_path / "out"
    result = cli("analyse", ckpt, "--data", tmp_path / "data", "--out", out, "-q")
    expect_refusal(
        result,
        case="data directory that is not a `save_to_disk` dataset",
        code=1,
        problem="not a `save_to_disk` dataset",
        fix="pass a data file",
        out=out,
    )


def test_missing_text_column(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("finetune", ckpt, "--data", train_tsv, "--text-column", "review_body", "--out", out, "-q")
    line = expect_refusal(
        result,
        case="--text-column names a column the file lacks",
        code=1,
        problem="has no text column `review_body`",
        fix="pass --text-column",
        out=out,
    )
    assert "columns are sentence, label" in line


def test_no_text_column_found(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    data = _write(tmp_path / "train.csv", "body,label\na great movie,1\nawful,0\n")
    result = cli("finetune", ckpt, "--data", data, "--out", out, "-q")
    expect_refusal(
        result,
        case="no column looks like text (and no --text-column)",
        code=1,
        problem="no text column found",
        fix="pass --text-column",
        out=out,
    )


def test_missing_label_column(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    result = cli("analyse", ckpt, "--data", train_tsv, "--label-column", "sentiment", "--out", out, "-q")
    expect_refusal(
        result,
        case="label column missing",
        code=1,
        problem="has no label column `sentiment`",
        fix="pass --label-column",
        out=out,
    )


def test_empty_label(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    data = _write(tmp_path / "train.tsv", "sentence\tlabel\na great movie\t1\nawful\t\n")
    result = cli("finetune", ckpt, "--data", data, "--out", out, "-q")
    expect_refusal(
        result,
        case="a row with an empty label",
        code=1,
        problem="empty label in row 2 (line 3)",
        fix="fill it in or remove the row",
        out=out,
    )


def test_tab_inside_tsv_text(cli, tmp_path: Path, ckpt: Path) -> None:
    # pandas made "not" the index and evaluated the model on "a great movie": words lost without a word
    out = tmp_path / "out"
    data = _write(tmp_path / "val.tsv", "sentence\tlabel\nnot\ta great movie\t1\nawful\tand dull\t0\n")
    result = cli("analyse", ckpt, "--data", data, "--out", out, "-q")
    line = expect_refusal(
        result,
        case="a tab inside the text of a tsv file",
        code=1,
        problem="line 2 has 3 fields but the header has 2 (sentence, label)",
        fix="replace tabs in the text with spaces",
        out=out,
    )
    assert "val.tsv" in line


def test_tab_inside_first_tsv_row(cli, tmp_path: Path, ckpt: Path) -> None:
    # with only the first row split, pandas blamed the next one: "empty label in row 2"
    out = tmp_path / "out"
    data = _write(tmp_path / "val.tsv", "sentence\tlabel\nnot\ta great movie\t1\nawful\t0\n")
    result = cli("analyse", ckpt, "--data", data, "--out", out, "-q")
    line = expect_refusal(
        result,
        case="a tab inside the text of the first tsv row",
        code=1,
        problem="line 2 has 3 fields",
        fix="replace tabs in the text with spaces",
        out=out,
    )
    assert "empty label" not in line


def test_jsonl_line_without_a_label(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    data = _write(tmp_path / "val.jsonl", '{"sentence": "great", "label": 1}\n{"sentence": "awful"}\n')
    result = cli("analyse", ckpt, "--data", data, "--out", out, "-q")
    expect_refusal(
        result,
        case="a jsonl line without the label key",
        code=1,
        problem="line 2 has no key `label`",
        fix="add it or remove the line",
        out=out,
    )


def test_eval_labels_unseen_in_train(cli, tmp_path: Path, ckpt: Path, train_tsv: Path) -> None:
    out = tmp_path / "out"
    val = _write(tmp_path / "val.tsv", "sentence\tlabel\na great movie\t1\nso so\t2\n")
    result = cli("finetune", ckpt, "--data", train_tsv, "--eval-data", val, "--out", out, "-q")
    line = expect_refusal(
        result,
        case="evaluation labels not seen in training",
        code=1,
        problem="has label(s) 2 that the model does not know",
        fix="remove those rows or train on data that has every label",
        out=out,
    )
    assert "val.tsv" in line


def test_label_count_differs_from_head(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    data = _write(tmp_path / "train.tsv", "sentence\tlabel\ngreat\t0\nok\t1\nbad\t2\n")
    result = cli("finetune", ckpt, "--data", data, "--out", out, "-q")
    expect_refusal(
        result,
        case="3 labels for a checkpoint with a 2-way head",
        code=1,
        problem="has 3 labels but the checkpoint",
        fix="use data with the same label set",
        out=out,
    )


def test_label_names_unknown_to_the_checkpoint(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    val = _write(tmp_path / "val.tsv", "sentence\tlabel\ngreat\tpos\nbad\tneg\n")
    result = cli("prune", ckpt, "--heads", "0.25", "--eval-data", val, "--out", out, "-q")
    line = expect_refusal(
        result,
        case="evaluation labels named differently from the checkpoint's",
        code=1,
        problem="that the model does not know",
        fix="remove those rows",
        out=out,
    )
    assert "known: negative, positive" in line


def test_single_class(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    data = _write(tmp_path / "train.tsv", "sentence\tlabel\ngreat\t1\nfun\t1\nlovely\t1\n")
    result = cli("finetune", ckpt, "--data", data, "--out", out, "-q")
    expect_refusal(
        result,
        case="a single-class training set",
        code=1,
        problem="has a single class",
        fix="needs examples of at least two labels",
        out=out,
    )


def test_non_utf8_data(cli, tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    data = tmp_path / "train.tsv"
    data.write_bytes("sentence\tlabel\ncafé crème, très bon\t1\nbad\t0\n".encode("latin-1"))
    result = cli("finetune", ckpt, "--data", data, "--out", out, "-q")
    expect_refusal(
        result,
        case="non-UTF-8 data file (Latin-1)",
        code=1,
        problem="is not UTF-8 text (line 2, byte 18",
        fix="re-encode it as UTF-8",
        out=out,
    )


def test_non_utf8_predict_file(cli, tmp_path: Path, artifact: Path) -> None:
    lines = tmp_path / "texts.txt"
    lines.write_bytes("a great movie\ncafé\n".encode("latin-1"))
    result = cli("predict", artifact, "--file", lines, "-q")
    expect_refusal(
        result,
        case="`predict --file` with non-UTF-8 text",
        code=1,
        problem="is not UTF-8 text",
        fix="re-encode it as UTF-8",
    )
