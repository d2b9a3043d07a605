"""`prune_`: remove heads and FFN neurons (by fractions scored by magnitude, or exactly as a plan says), then
optionally recover accuracy: `reconstruct` (least-squares scales, no training) and/or `distill` (a short fine-tune
with distillation from the unpruned model); with `iterations` > 1, prune → recover repeats until the target."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from compressor.arch.parts import arch_of, encoder_layers, get_module
from compressor.arch.structure import ensure_structure, structure_of, summary
from compressor.errors import ConfigError
from compressor.prune.augment import augment
from compressor.prune.config import PruneConfig
from compressor.prune.distill import distill_
from compressor.prune.recover import reconstruct_
from compressor.prune.schedule import count_schedule, kept_fractions, plan_target, rescore_step_
from compressor.prune.units import apply_plan_, keep_zeros, prune_to_counts_, unstructured_mask_, update_head_scores
from compressor.prune.vocab import model_bytes, prune_vocab_, unknown_rate, used_token_ids
from compressor.sensitivity.plan import Plan
from compressor.train.loop import evaluate

logger = logging.getLogger(__name__)


@dataclass
class PruneReport:
    structure: list[tuple[int, int, int]]  # (source layer, heads, FFN width)
    params_before: int
    params_after: int
    encoder_params_before: int
    encoder_params_after: int
    recovery: dict[str, Any] = field(default_factory=dict)  # of the last step
    iterations: list[dict[str, Any]] = field(default_factory=list)  # per step when `iterations` > 1
    vocab: dict[str, Any] | None = None  # what vocabulary pruning kept, and the bytes it saved
    accuracy: float | None = None  # on `eval_data`, after everything (None for regression: see `metrics`)
    unstructured: dict[str, Any] | None = None  # the single weights set to zero, and how they were chosen
    metrics: dict[str, float] | None = None  # the evaluation on `eval_data` (regression: pearson, spearman, mse)


def _split(total: int, parts: int) -> list[int]:
    """`total` steps over `parts` rounds as evenly as possible (later rounds get the remainder)."""
    return [total * (t + 1) // parts - total * t // parts for t in range(parts)]


def prune_(
    model: nn.Module,
    config: PruneConfig,
    *,
    tokenizer: Any = None,
    data: Any = None,
    eval_data: Any = None,
    vocab_data: Any = None,
    base: nn.Module | None = None,
    work_dir: Path | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> PruneReport:
    """Remove the heads and FFN neurons the config asks for, in place; then recover if asked; then keep only the
    vocabulary `vocab_data` uses.

    With `config.iterations` = k > 1 the target is reached in k prune → recover rounds (see
    compressor/prune/schedule.py); the teacher is always the model as it was before the first round.

    Args:
        data: training sentences (LabelledData) for recovery, and for re-scoring a plan between rounds.
        eval_data: validation data to report accuracy after everything.
        vocab_data: texts (a LabelledData, labels not needed) whose token ids the embedding keeps.
        base: with `heads_by: update`, the checkpoint fine-tuning started from (heads are ranked by how much
            their query/value rows moved from it).
        work_dir: where distillation keeps its checkpoints (default: a temporary directory).
        resume: continue an interrupted distillation from its newest checkpoint in `work_dir` (the steps before it
            are deterministic, so the checkpoint belongs to the same model).
    """
    params_before = sum(p.numel() for p in model.parameters())
    enc_before = sum(p.numel() for p in encoder_layers(model).parameters())
    k = config.iterations
    if config.recover != "none" and (data is None or tokenizer is None):
        raise ConfigError("recovery needs training data: pass --data")
    if config.uses_update_base and base is None:
        raise ConfigError("ranking by the update needs the base checkpoint fine-tuning started from (`update_base`)")
    if k > 1 and config.recover == "none":
        logger.warning("`iterations` %d without recovery: the rounds only differ from one step by re-scoring", k)
    plan = target = None
    if config.plan is not None:
        plan = Plan.load(Path(config.plan))
        if k > 1:
            target = plan_target(model, plan)
    structure = ensure_structure(model)
    head_counts = [count_schedule(len(e["heads"]), config.heads, k, config.schedule) for e in structure["layers"]]
    ffn_counts = [count_schedule(e["intermediate"], config.ffn, k, config.schedule) for e in structure["layers"]]
    total = config.recover_steps or math.ceil(len(data or []) * config.recover_epochs / config.batch_size)
    distill_steps = _split(max(total, k), k) if "distill" in config.recover else [0] * k
    teacher = copy.deepcopy(model).eval() if config.recover != "none" else None
    distill_data = data
    if config.augment and teacher is not None and "distill" in config.recover and data is not None:
        distill_data = augment(
            data,
            teacher,
            tokenizer,
            copies=config.augment,
            rate=config.augment_rate,
            seed=config.seed,
            embedding=get_module(teacher, arch_of(teacher).word_embeddings).weight,
        )
    rounds: list[dict[str, Any]] = []
    recovery: dict[str, Any] = {}
    masks, unstructured = None, None
    for t in range(k):
        step: dict[str, Any] = {"step": t + 1}
        if plan is None:
            by_update = update_head_scores(model, base) if config.heads_by == "update" and base is not None else None
            prune_to_counts_(model, [c[t] for c in head_counts], [c[t] for c in ffn_counts], by_update)
        elif k == 1:
            apply_plan_(model, plan)
        else:
            share = kept_fractions(target.kept, k, config.schedule)[t]
            step["rescored"] = rescore_step_(
                model, plan, target, share, tokenizer=tokenizer, data=data, seed=config.seed + t
            )
        if t == k - 1 and config.unstructured:  # single weights after the last structured step, before its recovery
            by_update = base if config.unstructured_by == "update" else None
            masks = unstructured_mask_(model, config.unstructured, config.unstructured_roles, by_update)
            zeroed = sum(int((~m).sum()) for m in masks.values())
            unstructured = {"share": config.unstructured, "by": config.unstructured_by, "zeroed": zeroed}
            unstructured |= {"roles": list(config.unstructured_roles), "matrices": len(masks)}
            logger.info("unstructured: %s weights of %d matrices set to zero", f"{zeroed:,}", len(masks))
        with keep_zeros(model, masks):
            recovery = _recover_(
                model,
                teacher,
                tokenizer,
                config,
                data=data,
                distill_data=distill_data,
                eval_data=eval_data,
                distill_steps=distill_steps[t],
                work_dir=_round_dir(work_dir, t, k),
                resume=resume,
                quiet=quiet,
            )
        step |= {
            "structure": summary(structure_of(model)),
            "encoder_params": sum(p.numel() for p in encoder_layers(model).parameters()),
        } | recovery
        rounds.append(step)
        if k > 1:
            logger.info("round %d/%d: %s encoder parameters", t + 1, k, f"{step['encoder_params']:,}")
    vocab = None if vocab_data is None else _prune_vocab_(model, tokenizer, config, vocab_data, eval_data)
    evaluation = None if eval_data is None else evaluate(model, tokenizer, eval_data)
    report = PruneReport(
        summary(structure_of(model)),
        params_before,
        sum(p.numel() for p in model.parameters()),
        enc_before,
        sum(p.numel() for p in encoder_layers(model).parameters()),
        recovery,
        rounds if k > 1 else [],
        vocab,
        None if evaluation is None else evaluation.get("accuracy"),
        unstructured,
        evaluation,
    )
    logger.info("pruned: %s → %s parameters", f"{params_before:,}", f"{report.params_after:,}")
    return report


def _prune_vocab_(model: nn.Module, tokenizer: Any, config: PruneConfig, texts: Any, eval_data: Any) -> dict[str, Any]:
    """Keep the embedding rows of the token ids `texts` use; report sizes and the validation tokens that fall back."""
    keep = used_token_ids(tokenizer, texts.texts, texts.text_pairs)
    before = model_bytes(model)
    report = prune_vocab_(
        model, keep, tokenizer.unk_token_id, fallback=config.vocab_fallback, codes=config.vocab_codes
    )
    out = asdict(report) | {"model_bytes_before": before, "model_bytes_after": model_bytes(model)}
    if eval_data is not None:
        out["validation_unknown_rate"] = unknown_rate(tokenizer, keep, eval_data.texts, eval_data.text_pairs)
    logger.info(
        "vocabulary: kept %d of %d token ids; model %.1f MB → %.1f MB",
        report.kept,
        report.source_size,
        before / 1e6,
        out["model_bytes_after"] / 1e6,
    )
    return out


def _round_dir(work_dir: Path | None, t: int, k: int) -> Path | None:
    if work_dir is None or k == 1:
        return work_dir
    return Path(work_dir) / f"round-{t + 1}"


def _recover_(
    model: nn.Module,
    teacher: nn.Module | None,
    tokenizer: Any,
    config: PruneConfig,
    *,
    data: Any,
    distill_data: Any,
    eval_data: Any,
    distill_steps: int,
    work_dir: Path | None,
    resume: bool,
    quiet: bool,
) -> dict[str, Any]:
    """One round of the recovery `config.recover` asks for: reconstruct, then distill."""
    out: dict[str, Any] = {}
    if teacher is None:
        return out
    if "reconstruct" in config.recover:
        out["reconstruct"] = reconstruct_(
            model, teacher, tokenizer, data, samples=config.samples, seed=config.seed, quiet=quiet
        )
    if "distill" in config.recover and distill_steps > 0:
        out["distill"] = distill_(
            model,
            teacher,
            tokenizer,
            config,
            data=distill_data,
            eval_data=eval_data,
            work_dir=work_dir,
            resume=resume and work_dir is not None,
            quiet=quiet,
            steps=distill_steps,
        )
    return out
