"""`compressor predict`: classify text with an artifact. Imports only the runtime: no torch, fast start."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from cli._options import QuietOpt


def command(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory written by `compressor export`.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify; none: read lines from stdin.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Classify each line of this UTF-8 file.")] = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads (default: one per core).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per ONNX Runtime call.")] = 32,
    quiet: QuietOpt = False,
) -> None:
    """Print one JSON line {"label": …, "score": …} per input text (arguments, --file lines, or stdin lines).

    Example: compressor predict runs/artifact "a gripping, beautifully shot film"
    """
    from cli._options import setup

    setup(quiet)
    from compressor.errors import ConfigError
    from exporters.runtime import Runtime

    if texts and file is not None:
        raise ConfigError("pass texts as arguments or --file, not both")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    runtime = Runtime(artifact, threads=threads)
    if texts:
        source: Iterable[str] = texts
    elif file is not None:
        source = _file_lines(file)
    else:
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError('no input: pass TEXT arguments, --file F, or pipe lines on stdin (`echo "text" | ...`)')
        source = (line.rstrip("\r\n") for line in sys.stdin)
    for chunk in _chunks(source, batch_size):
        for result in runtime.predict(chunk, batch_size=batch_size):
            typer.echo(_json_line(result))


def _json_line(result: dict) -> str:
    import json

    return json.dumps({"label": result["label"], "score": round(result["score"], 6)}, ensure_ascii=False)


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
    """Batches of lines, so a long stdin stream prints results as it goes."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
