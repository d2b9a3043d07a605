"""The Typer app and the one place where domain errors become a red line and an exit code.

Command modules import the library inside their functions, so `compressor predict` starts without torch.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from types import FrameType

import typer

from compressor.errors import CompressorError
from compressor.fs import interrupts, record_interrupt

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
REDELIVER_S = 0.05


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C and SIGTERM (what `timeout`, docker and systemd send) unwind as KeyboardInterrupt, so partial output
    is removed. Python prints and swallows an exception raised inside a finalizer (`__del__`, often reached from
    the garbage collector), so there the interrupt is delivered again a moment later, from outside it."""
    if signum != signal.SIGALRM:
        record_interrupt(signum)
    if _inside_finalizer(frame):
        signal.setitimer(signal.ITIMER_REAL, REDELIVER_S)
        return
    raise KeyboardInterrupt


def _inside_finalizer(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, _on_signal)
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
        if exc.code == 130 or interrupts():  # Typer turns Ctrl-C inside a command into a silent exit 130
            _interrupted()
        raise
    finally:
        _end_process_group()
    if interrupts():  # the command finished although asked to stop (the interrupt came after its last output)
        _interrupted()


def _end_process_group() -> None:
    """Close the process group that the Trainer (through accelerate) opened under torchrun, if one is open.

    Left to the interpreter's exit, gloo's threads are torn down in no set order and a rank ended now and then
    with `terminate called without an active exception` (SIGABRT, exit -6) after a run that had succeeded:
    4 times in 40 two-process runs here. Looked up in sys.modules, so a command that never imported torch
    (the edge install) does not import it here."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _interrupted() -> None:
    """The message and exit code of an interrupted command: 130 after Ctrl-C, 143 after SIGTERM."""
    terminated = signal.SIGTERM in interrupts()
    typer.secho(TERMINATED if terminated else INTERRUPTED, fg="red", err=True)
    raise SystemExit(143 if terminated else 130) from None


if __name__ == "__main__":
    main()
