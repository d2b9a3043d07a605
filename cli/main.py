"""The Typer app and the one place where domain errors become a red line and an exit code.

Command modules import the library inside their functions, so `compressor predict` starts without torch.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
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
COMMANDS = (
    "analyse",
    "finetune",
    "merge",
    "prune",
    "export",
    "benchmark",
    "compare",
    "predict",
    "inspect",
    "run",
    "demo",
)
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
    # transformers configures its loggers on first import (after this): its own variable keeps them quiet
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


INTERRUPTED = "Interrupted: no partial output was left; rerun (with --resume where offered) to continue."
# Installed by the `train` extra; a command that needs one of them says how to install it instead of a traceback.
TRAINING_STACK = (
    "torch",
    "transformers",
    "datasets",
    "onnx",
    "optimum",
    "peft",
    "accelerate",
    "safetensors",
    "matplotlib",
)


TERMINATED = "Terminated: no partial output was left; rerun (with --resume where offered) to continue."
_signals: list[int] = []  # SIGTERM received: the interrupt below came from it, not from Ctrl-C


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (what `timeout`, docker and systemd send) unwinds like Ctrl-C, so partial output is removed."""
    _signals.append(signum)
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app()
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in TRAINING_STACK or os.environ.get("COMPRESSOR_DEBUG") == "1":
            raise
        typer.secho(
            f"Error: this command needs the training stack (`{err.name}` is not installed); install it with "
            "pip install 'compressor[train]'",
            fg="red",
            err=True,
        )
        raise SystemExit(1) from None
    except CompressorError as err:
        if os.environ.get("COMPRESSOR_DEBUG") == "1":
            raise
        message = " ".join(str(err).split())  # always one line
        typer.secho(f"Error: {message}", fg="red", err=True)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        if exc.code == 130:  # Typer turns Ctrl-C inside a command into a silent exit 130: say what it means
            _interrupted()
        raise


def _interrupted() -> None:
    """The message and exit code of an interrupted command: 130 after Ctrl-C, 143 after SIGTERM."""
    terminated = bool(_signals)
    typer.secho(TERMINATED if terminated else INTERRUPTED, fg="red", err=True)
    raise SystemExit(143 if terminated else 130) from None


if __name__ == "__main__":
    main()
