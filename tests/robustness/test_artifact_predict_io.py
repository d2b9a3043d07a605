"""`compressor predict` on pipes: answers stream out as lines arrive, a closed stdout (`| head -1`) is a normal end
(exit 0, nothing on stderr), and stdin that is not UTF-8 is one `Error:` line."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cli.predict import _fd_batches
from tests.robustness.harness import expect_refusal, expect_success

ROOT = Path(__file__).resolve().parents[2]
MAIN = "from cli.main import main; main()"


def _compressor(*args: object, **kwargs: object) -> subprocess.Popen:
    """`compressor ARGS` in a child process (real pipes, unlike the in-process `cli` runner)."""
    return subprocess.Popen(
        [sys.executable, "-c", MAIN, *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def _readline(stream: io.BufferedReader, timeout: float = 60.0) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no answer within {timeout} s"
    return stream.readline()


def test_answers_stream_before_stdin_ends(artifact: Path) -> None:
    """Each answer arrives while stdin is still open (it used to wait for the end of input)."""
    proc = _compressor("predict", artifact, "-q", stdin=subprocess.PIPE)
    try:
        for text in ("a great movie", "so bad"):
            proc.stdin.write(f"{text}\n".encode())
            proc.stdin.flush()
            assert _readline(proc.stdout).startswith(b'{"label": ')
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert proc.stdout.read() == b"" and proc.stderr.read() == b""
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("source", ["--file", "stdin"])
def test_closed_stdout_is_a_normal_end(artifact: Path, tmp_path: Path, source: str) -> None:
    """`compressor predict ... | head -1`: exit 0 and silence (it exited 1, and Python could add a BrokenPipeError
    notice at exit). The input is far larger than a pipe's buffer, so predict is still writing when head leaves."""
    lines = tmp_path / "lines.txt"
    lines.write_text("a great movie\n" * 5000, encoding="utf-8")
    with open(lines, "rb") as stdin:
        args = ("--file", lines) if source == "--file" else ()
        proc = _compressor("predict", artifact, "-q", *args, stdin=stdin)
        try:
            assert _readline(proc.stdout).startswith(b'{"label": ')
            proc.stdout.close()  # what `head -1` does after its first line
            assert proc.wait(timeout=120) == 0
            assert proc.stderr.read().decode() == ""
        finally:
            proc.kill()
            proc.wait()


def _pipe_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    """A real pipe as stdin (its write end closed after `data`), as `printf ... | compressor predict` gives."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    monkeypatch.setattr(sys, "stdin", open(read_fd, encoding="utf-8"))  # noqa: SIM115 (closed by the runner)


def test_stdin_pipe_lines_are_each_answered(cli, monkeypatch: pytest.MonkeyPatch, artifact: Path) -> None:
    _pipe_stdin(monkeypatch, b"a great movie\r\n\nso bad")  # CRLF, an empty line, no final newline
    result = cli("predict", artifact, "-q", "--batch-size", "2")
    expect_success(result, case="predict reading lines from a pipe", note="exit 0; one JSON line per input line")
    assert len(result.out.splitlines()) == 3


def test_stdin_not_utf8(cli, monkeypatch: pytest.MonkeyPatch, artifact: Path) -> None:
    _pipe_stdin(monkeypatch, b"a great movie\nso \xff bad\n")
    result = cli("predict", artifact, "-q")
    expect_refusal(
        result,
        case="predict: stdin that is not UTF-8",
        code=1,
        problem="stdin line 2 is not utf-8 text (byte 3)",
        fix="re-encode it as UTF-8",
    )


def test_batches_hold_what_is_available_without_waiting() -> None:
    """Three lines already in the pipe make one batch at once; a fourth, written later, makes the next."""
    read_fd, write_fd = os.pipe()
    batches = _fd_batches(read_fd, 32, "utf-8")
    pool = ThreadPoolExecutor(1)
    try:
        os.write(write_fd, b"un\ndeux\ntrois\nqua")
        assert pool.submit(next, batches).result(timeout=30) == ["un", "deux", "trois"]
        pending = pool.submit(next, batches)
        threading.Event().wait(0.2)
        assert not pending.done()  # "qua" is not a whole line yet: wait for the rest of it
        os.write(write_fd, b"tre\ncinq\n")
        assert pending.result(timeout=30) == ["quatre", "cinq"]
        os.close(write_fd)
        write_fd = -1
        assert pool.submit(list, batches).result(timeout=30) == []
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        pool.shutdown(wait=False)
        os.close(read_fd)


def test_batches_are_cut_at_batch_size() -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"".join(b"line %d\n" % i for i in range(7)))
    os.close(write_fd)
    try:
        assert [len(b) for b in _fd_batches(read_fd, 3, "utf-8")] == [3, 3, 1]
    finally:
        os.close(read_fd)


def test_pairs_input_without_a_tab(cli, artifact: Path) -> None:
    result = cli("predict", artifact, "-q", "--pairs", "a great movie\ta fine film", "no tab here")
    expect_refusal(
        result,
        case="predict --pairs: an input without a tab",
        code=1,
        problem="input 2 has no tab",
        fix="TEXT<TAB>SECOND",
    )
