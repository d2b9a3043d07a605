"""`compressor run`: a recipe's stages in order, one directory each, resumable; then the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._options import ForceOpt, JsonOpt, OutDirOpt, QuietOpt

ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Keep the finished stages of an earlier run of --out whose settings and "
        "inputs are unchanged; rerun from the first changed or unfinished stage.",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a recipe value before validation: STAGE.KEY=VALUE (a stage by its name), e.g. "
        "prune.heads=0.3, finetune.train.lr=1e-4, model=DIR, data.train=FILE (repeatable).",
    ),
]


def command(
    recipe: Annotated[Path, typer.Argument(help="A recipe YAML file (see samples/recipes/).")],
    out: OutDirOpt,
    resume: ResumeOpt = False,
    overrides: SetOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run RECIPE's stages (analyse, finetune, merge, prune, export, benchmark) into --out; write report.md/.html.

    Each stage writes OUT/NN-stage/ with stage.json and, when it finishes, a DONE marker. Interrupt at any time
    and rerun with --resume: finished stages are kept, an interrupted fine-tune continues from its checkpoint.

    Example: compressor run samples/recipes/minilm-sst2-fast.yaml --out runs/fast --set prune.heads=0.3
    """
    from cli._options import emit, setup

    setup(quiet)
    from compressor.stages.report import summarise_run
    from compressor.stages.runner import run_pipeline

    result = run_pipeline(recipe, out, resume=resume, overrides=overrides, force=force, quiet=quiet)
    if as_json:
        emit(
            {
                "out": str(result.out_dir),
                "artifact": None if result.artifact is None else str(result.artifact),
                "artifacts": {name: str(path) for name, path in result.artifacts.items()},
                "report": {"md": str(result.report_md), "html": str(result.report_html)},
                "stages": [{"dir": s.dir.name, "status": s.status, **s.record} for s in result.stages],
            },
            True,
        )
    elif not quiet:
        typer.echo(summarise_run(result.out_dir))
        if result.artifact is not None:
            typer.echo(f"artifact: {result.artifact}")
