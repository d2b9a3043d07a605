"""The shared `main()` of the bench scripts: logging, the one error boundary, the closing summary."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any


def run_main(
    argv: list[str] | None,
    parse_args: Callable[[list[str]], Any],
    run: Callable[[Any], Any],
    summary: Callable[[Any], str],
) -> int:
    """Parse, run and print the summary; a CompressorError becomes one `Error:` line and its exit code."""
    from compressor.errors import CompressorError

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        cfg = parse_args(argv)
        if cfg.quiet:
            logging.getLogger().setLevel(logging.WARNING)
        result = run(cfg)
    except CompressorError as err:
        print(f"Error: {err}", file=sys.stderr)
        return err.exit_code
    print(summary(result))
    return 0
