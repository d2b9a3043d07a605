"""Options shared by the commands, and options made from config dataclasses (help and defaults declared once).

`@config_options(train=TrainConfig)` replaces a command's `train: TrainConfig` parameter by one option per field
of the dataclass (`--lr`, `--batch-size` …: the flag is the field name, the help and default are the field's), and
hands the command the config built from them (validated: a bad value is a one-line ConfigError naming the field).
A field's metadata may set `flag` ("--per-channel/--per-tensor"), `short` ("-d") and `cli: False` (not an option).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

ModelArg = Annotated[
    str,
    typer.Argument(
        help="A local checkpoint directory, `minilm` for the bundled model, or a Hugging Face hub id found in the "
        "local cache (HF_HOME; set HF_HUB_OFFLINE=0 to download)."
    ),
]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (written whole, or not at all).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace --out if it exists and is not empty.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info messages.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]
DATA_COLUMNS = ("text_column", "text_pair_column", "label_column")


@dataclass(frozen=True)
class Fields:
    """Which fields of a config become options: `include` (default all), `required`, `rename` (field → flag)."""

    cls: type
    include: tuple[str, ...] | None = None
    required: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    help: tuple[tuple[str, str], ...] = ()

    def fields(self) -> list[dataclasses.Field]:
        chosen = [f for f in dataclasses.fields(self.cls) if f.init and f.metadata.get("cli", True)]
        if self.include is not None:
            unknown = set(self.include) - {f.name for f in chosen}
            if unknown:
                raise TypeError(f"{self.cls.__name__} has no field(s) {sorted(unknown)}")
            chosen = [f for f in chosen if f.name in self.include]
        return chosen


def labelled_data(help: str) -> Fields:
    """The data options of a command that reads only labelled validation data, given as `--data`."""
    from compressor.stages.context import DataSpec

    return Fields(
        DataSpec,
        include=("eval", "text_column", "text_pair_column", "label_column"),
        rename=(("eval", "--data"),),
        help=(("eval", help),),
    )


def _option_type(hint: Any) -> tuple[Any, bool]:
    """The type Typer parses a field as, and whether None is allowed."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        return str, True
    return hint, False


def _parameters(group: str, spec: Fields) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(spec.cls)
    rename, helps = dict(spec.rename), dict(spec.help)
    params = []
    for f in spec.fields():
        kind, optional = _option_type(hints[f.name])
        dashed = f.name.replace("_", "-")
        flag = (
            rename.get(f.name)
            or f.metadata.get("flag")
            or (f"--{dashed}/--no-{dashed}" if kind is bool else f"--{dashed}")
        )
        decls = [flag] + ([f.metadata["short"]] if f.metadata.get("short") else [])
        default: Any
        if f.name in spec.required:
            default = ...
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()  # type: ignore[misc]
        annotation = Annotated[
            kind | None if optional else kind,
            typer.Option(*decls, help=helps.get(f.name) or f.metadata.get("help", "")),
        ]
        params.append(
            inspect.Parameter(
                f"{group}__{f.name}", inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    return params


def config_options(**groups: type | Fields) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn each `name: ConfigClass` parameter of a command into the config's fields as options (see module doc)."""
    specs = {name: g if isinstance(g, Fields) else Fields(g) for name, g in groups.items()}

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func, eval_str=True)  # the annotations are strings (PEP 563)
        kept = [p for name, p in signature.parameters.items() if name not in specs]
        generated = [p for name, spec in specs.items() for p in _parameters(name, spec)]
        positional = [p for p in kept if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept if p not in positional]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from compressor.schema import build_config

            for name, spec in specs.items():
                values = {f.name: kwargs.pop(f"{name}__{f.name}") for f in spec.fields()}
                kwargs[name] = build_config(spec.cls, values, source=f"--{name.replace('_', '-')} options")
            return func(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=positional + keyword + generated)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {}
        del wrapper.__wrapped__  # Typer must read the new signature, not the function's own
        return wrapper

    return decorate


def setup(quiet: bool) -> None:
    from cli.main import configure_logging

    configure_logging(quiet)


def emit(data: Any, as_json: bool) -> None:
    """Print data as JSON when asked (machine output), else nothing here (commands print their own tables)."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))


def run_stage_command(
    key: str,
    config: Any,
    *,
    out: Path,
    data: Any = None,
    model: str | None = None,
    adapter: Path | None = None,
    inputs: Iterable[Any] = (),
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    as_json: bool = False,
) -> dict[str, Any]:
    """Run one registered stage as its command: `out` checked and locked, written whole; print what it did."""
    from compressor.checkpoint import is_hub_id, resolve_model_path
    from compressor.stages import STAGES, Context
    from compressor.stages.context import DataFiles, DataSpec
    from compressor.stages.runner import run_stage

    if model is not None and is_hub_id(model):  # a hub id becomes its snapshot directory before anything reads it
        model = str(resolve_model_path(model))
    stage = STAGES.get(key)
    ctx = Context(
        out=Path(out),
        data=DataFiles(data if data is not None else DataSpec()),
        model=model,
        adapter=adapter,
        resume=resume,
        quiet=quiet,
        name=key,
    )
    summary = run_stage(stage, ctx, config, force=force, inputs=list(inputs))
    if as_json:
        emit({"out": str(out), **summary}, True)
    elif not quiet:
        line = stage.describe(summary)
        typer.echo(f"{key}: {line}" if line else key)
        typer.echo(f"wrote {out}")
    return summary
