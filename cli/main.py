"""The Typer app and the one place where domain errors become a red line and an exit code.

Command modules import the library inside their functions, so `compressor predict` starts without torch.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from compressor.errors import CompressorError

app = typer.Typer(
    name="compressor",
    help=(
        "Compress a BERT-family text classifier into a small, fast ONNX artifact for edge CPUs.\n\n"
        "Example: compressor demo    (bundled MiniLM + SST-2 subset, whole pipeline, about 5-10 minutes)"
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

# The full list, in pipeline order: each module defines `command`.
COMMANDS = ("analyse", "finetune", "merge", "prune", "export", "benchmark", "predict", "inspect", "run", "demo")
for _name in COMMANDS:
    _module = importlib.import_module(f"cli.{_name}")
    app.command(_name, cls=getattr(_module, "command_cls", None))(_module.command)


def configure_logging(quiet: bool) -> None:
    """Progress and info on stderr unless `--quiet`; libraries' chatter stays at warning level."""
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in (
        "transformers",
        "datasets",
        "accelerate",
        "peft",
        "onnxruntime",
        "optimum",
        "torch",
        "urllib3",
        "httpx",
        "filelock",
        "matplotlib",
        "PIL",
    ):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


INTERRUPTED = "Interrupted: no partial output was left; rerun (with --resume where offered) to continue."


def main() -> None:
    try:
        app()
    except CompressorError as err:
        if os.environ.get("COMPRESSOR_DEBUG") == "1":
            raise
        message = " ".join(str(err).split())  # always one line
        typer.secho(f"Error: {message}", fg="red", err=True)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        typer.secho(INTERRUPTED, fg="red", err=True)
        raise SystemExit(130) from None
    except SystemExit as exc:
        if exc.code == 130:  # Typer turns Ctrl-C inside a command into a silent exit 130: say what it means
            typer.secho(INTERRUPTED, fg="red", err=True)
        raise


if __name__ == "__main__":
    main()
