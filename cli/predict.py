"""`compressor predict`: classify text with an artifact (or score it, with a regression artifact). Imports only the
runtime: no torch, fast start."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, TextIO

import typer

from cli._options import QuietOpt

READ_SIZE = 1 << 16


def command(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory written by `compressor export`.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify; none: read lines from stdin.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Classify each line of this UTF-8 file.")] = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads (default: one per core).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per ONNX Runtime call.")] = 32,
    pairs: Annotated[
        bool,
        typer.Option(
            "--pairs",
            help="Each input is TEXT<TAB>SECOND: the two segments of a sentence-pair model (NLI, paraphrase, STS).",
        ),
    ] = False,
    flush_denormals: Annotated[
        bool,
        typer.Option(
            "--flush-denormals",
            help="Flush denormals to zero (faster softmax over the padding of batched texts of unequal length).",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Print one JSON line {"label": …, "score": …} per input text (arguments, --file lines, or stdin lines); for
    a regression artifact {"score": …}, the predicted value.

    Example: compressor predict runs/artifact "a gripping, beautifully shot film"
    Pairs:   printf 'A man plays a guitar.\tSomeone makes music.\n' | compressor predict runs/sts --pairs
    """
    from cli._options import setup

    setup(quiet)
    from compressor.errors import ConfigError
    from exporters.runtime import Runtime

    if texts and file is not None:
        raise ConfigError("pass texts as arguments or --file, not both")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    runtime = Runtime(artifact, threads=threads, flush_denormals=flush_denormals)
    if texts:
        batches = _chunks(texts, batch_size)
    elif file is not None:
        batches = _chunks(_file_lines(file), batch_size)
    else:
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError('no input: pass TEXT arguments, --file F, or pipe lines on stdin (`echo "text" | ...`)')
        batches = _stdin_batches(sys.stdin, batch_size)
    try:
        seen = 0
        for batch in batches:
            second = None
            if pairs:
                batch, second = _split_pairs(batch, seen)
            seen += len(batch)
            results = runtime.predict(batch, second, batch_size=batch_size)
            out = sys.stdout
            out.write("".join(_json_line(r) + "\n" for r in results))
            out.flush()  # a pipe is block-buffered: without this, answers would wait for 8 KB of others
    except BrokenPipeError:
        # The reader went away (`| head -1`): a normal end of the output, not an error.
        _discard_stdout()


def _split_pairs(lines: list[str], seen: int) -> tuple[list[str], list[str]]:
    """Each line's two segments, split at its first tab; `seen` inputs came before (for the error's number)."""
    from compressor.errors import DataError

    firsts, seconds = [], []
    for k, line in enumerate(lines):
        first, tab, second = line.partition("\t")
        if not tab:
            raise DataError(
                f"input {seen + k + 1} has no tab: with --pairs each input is TEXT<TAB>SECOND ({line[:40]!r})"
            )
        firsts.append(first)
        seconds.append(second)
    return firsts, seconds


def _json_line(result: dict) -> str:
    import json

    if "label" not in result:  # a regression artifact: the score is the prediction
        return json.dumps({"score": round(result["score"], 6)})
    return json.dumps({"label": result["label"], "score": round(result["score"], 6)}, ensure_ascii=False)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of what is still buffered cannot fail."""
    # Otherwise Python prints "Exception ignored ... BrokenPipeError" at exit and exits 120.
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests): nothing to flush later
        pass


def _file_lines(path: Path) -> Iterator[str]:
    from compressor.errors import DataError

    if not path.is_file():
        raise DataError(f"--file `{path}` not found")
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                yield line.rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise DataError(f"--file `{path}` is not UTF-8 text (byte {err.start}); re-encode it as UTF-8") from None


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Batches of `size` lines (the last one shorter)."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _stdin_batches(stream: TextIO, size: int) -> Iterator[list[str]]:
    """Lines of `stream` in batches of at most `size`, each answered as soon as its line has arrived."""
    # A batch holds the lines already available: it never waits for more input. A real file descriptor is read
    # directly (`select` tells what is there without blocking); an in-memory stream (tests) never blocks.
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: StringIO and friends
        yield from _chunks((line.rstrip("\r\n") for line in stream), size)
        return
    yield from _fd_batches(fd, size, getattr(stream, "encoding", None) or "utf-8")


def _fd_batches(fd: int, size: int, encoding: str) -> Iterator[list[str]]:
    """Batches of the lines of `fd`: wait for one whole line, then add only what is already there."""
    import os

    from compressor.errors import DataError

    buf = bytearray()
    number = 0  # lines decoded so far, for error messages
    eof = False
    while buf or not eof:
        # Wait (block) for one whole line, or the end of the input ...
        newlines = buf.count(b"\n")
        while not eof and newlines == 0:
            chunk = os.read(fd, READ_SIZE)
            eof = not chunk
            buf += chunk
            newlines += chunk.count(b"\n")
        # ... then add only what is already there, up to a full batch, without waiting.
        while not eof and newlines < size and _readable(fd):
            chunk = os.read(fd, READ_SIZE)
            eof = not chunk
            buf += chunk
            newlines += chunk.count(b"\n")
        raw = buf.split(b"\n")
        rest = raw.pop()  # after the last newline: a partial line, or b"" when the input ends with one
        if eof and rest:
            raw.append(rest)
            rest = b""
        buf = bytearray(rest)
        lines: list[str] = []
        for line in raw:
            number += 1
            try:
                lines.append(line.decode(encoding).rstrip("\r"))
            except UnicodeDecodeError as err:
                raise DataError(
                    f"stdin line {number} is not {encoding} text (byte {err.start}); re-encode it as UTF-8"
                ) from None
        yield from _chunks(lines, size)


def _readable(fd: int) -> bool:
    """Whether reading `fd` would return at once (data or end of input) rather than wait."""
    import select

    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):  # select() on a pipe is POSIX only: batch just the lines already read
        return False
