"""`prune_`: remove heads and FFN neurons (by fractions scored by magnitude, or exactly as a plan says), then
optionally recover accuracy: `reconstruct` (least-squares scales, no training) and/or `distill` (a short fine-tune
with distillation from the unpruned model); with `iterations` > 1, prune → recover repeats until the target."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from compressor.errors import ConfigError, PruneError
from compressor.models import arch_of, encoder_layers, get_module, head_size
from compressor.prune.schedule import SCHEDULES, count_schedule, kept_fractions
from compressor.prune.structure import ensure_structure, structure_of, summary
from compressor.prune.surgery import prune_ffn_, prune_heads_
from compressor.prune.vocab import FALLBACKS

logger = logging.getLogger(__name__)

RECOVER = ("none", "distill", "reconstruct", "reconstruct+distill")


@dataclass(kw_only=True)
class PruneConfig:
    kind: ClassVar[str] = "prune"
    version: ClassVar[int] = 1

    heads: float = field(default=0.0, metadata={"help": "Fraction of attention heads to remove in each layer."})
    ffn: float = field(default=0.0, metadata={"help": "Fraction of FFN neurons to remove in each layer."})
    plan: str | None = field(default=None, metadata={"help": "plan.json from `compressor analyse` (exact units)."})
    recover: str = field(default="none", metadata={"help": f"Recovery after pruning: {', '.join(RECOVER)}."})
    recover_steps: int = field(
        default=0, metadata={"help": "Distillation steps in total (split evenly over `iterations`; 0: none)."}
    )
    distill_weight: float = field(default=1.0, metadata={"help": "λ in CE + λ·KL(student ‖ teacher)."})
    temperature: float = field(default=2.0, metadata={"help": "Distillation temperature T."})
    lr: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the recovery fine-tune (default: the recovery method's, 5e-5 for full)."},
    )
    batch_size: int = field(default=32, metadata={"help": "Batch size of the recovery fine-tune."})
    seed: int = field(default=42, metadata={"help": "Seed of the recovery fine-tune and of the samples drawn."})
    recover_method: str = field(
        default="full",
        metadata={
            "help": "Fine-tuning method that trains during distillation, merged afterwards (full: every weight)."
        },
    )
    samples: int = field(default=1024, metadata={"help": "Sentences `reconstruct` fits its scales on."})
    iterations: int = field(default=1, metadata={"help": "Reach the target in this many prune → recover steps."})
    schedule: str = field(
        default="geometric",
        metadata={"help": f"How the kept share shrinks over `iterations`: {', '.join(SCHEDULES)}."},
    )
    vocab_fallback: str = field(
        default="unk",
        metadata={
            "help": "With vocabulary pruning, where dropped token ids go: unk (the unknown row) or nearest (the "
            "kept row with the most similar embedding)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("heads", "ffn"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"`{name}` must be a fraction in [0, 1]; got {value!r}")
        if self.ffn == 1:
            raise ConfigError("`ffn` 1.0 would remove every FFN neuron of every layer; drop layers with a plan")
        if self.plan is not None and (self.heads or self.ffn):
            raise ConfigError("give either `plan` or the `heads`/`ffn` fractions, not both")
        if self.recover not in RECOVER:
            raise ConfigError(f"`recover` must be one of {', '.join(RECOVER)}; got {self.recover!r}")
        if self.vocab_fallback not in FALLBACKS:
            raise ConfigError(f"`vocab_fallback` must be one of {', '.join(FALLBACKS)}; got {self.vocab_fallback!r}")
        if self.recover_steps < 0:
            raise ConfigError(f"`recover_steps` must be >= 0; got {self.recover_steps!r}")
        if "distill" in self.recover and self.recover_steps == 0:
            self.recover_steps = 500
        if self.recover_steps and self.recover == "none":
            self.recover = "distill"
        if self.temperature <= 0 or self.distill_weight < 0:
            raise ConfigError("`temperature` must be positive and `distill_weight` non-negative")
        if self.lr is not None and not 0 < self.lr < 1:
            raise ConfigError(f"`lr` must be in (0, 1); got {self.lr!r}")
        for name in ("batch_size", "samples", "iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer; got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"`schedule` must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if "distill" in self.recover and self.recover_steps < self.iterations:
            raise ConfigError(f"`recover_steps` ({self.recover_steps}) must be >= `iterations` ({self.iterations})")
        _check_recover_method(self.recover_method, distill="distill" in self.recover)


def _check_recover_method(name: str, *, distill: bool) -> None:
    import compressor.methods  # noqa: F401  (registers every method)
    from compressor.methods.base import METHODS

    method = METHODS.get(name)  # ConfigError naming the known methods
    if method.prepare is not None:
        raise ConfigError(f"`recover_method` {name} changes the model's structure before training; choose another")
    if name != "full" and not distill:
        raise ConfigError(f"`recover_method` {name} trains during distillation; add `recover` distill")


@dataclass
class PruneReport:
    structure: list[tuple[int, int, int]]  # (source layer, heads, FFN width)
    params_before: int
    params_after: int
    encoder_params_before: int
    encoder_params_after: int
    recovery: dict[str, Any] = field(default_factory=dict)  # of the last step
    iterations: list[dict[str, Any]] = field(default_factory=list)  # per step when `iterations` > 1


def magnitude_head_scores(model: nn.Module) -> list[torch.Tensor]:
    """Per layer, the L2 norm of each head's q, k, v rows and o columns (data-free)."""
    arch = arch_of(model)
    d = head_size(model)
    scores = []
    for i, layer in enumerate(encoder_layers(model)):
        n = len(ensure_structure(model)["layers"][i]["heads"])
        if n == 0:
            scores.append(torch.zeros(0))
            continue
        s = torch.zeros(n)
        for path in (arch.query, arch.key, arch.value):
            w = get_module(layer, path).weight.detach().float()  # (n*d, hidden)
            s += w.view(n, d, -1).pow(2).sum(dim=(1, 2)).cpu()
        o = get_module(layer, arch.attn_out).weight.detach().float()  # (hidden, n*d)
        s += o.view(o.shape[0], n, d).pow(2).sum(dim=(0, 2)).cpu()
        scores.append(s.sqrt())
    return scores


def magnitude_neuron_scores(model: nn.Module) -> list[torch.Tensor]:
    """Per layer, ‖FFN-in row‖·‖FFN-out column‖ of each neuron (data-free)."""
    arch = arch_of(model)
    scores = []
    for i, layer in enumerate(encoder_layers(model)):
        if ensure_structure(model)["layers"][i]["intermediate"] == 0:
            scores.append(torch.zeros(0))
            continue
        w_in = get_module(layer, arch.ffn_in).weight.detach().float()  # (F, hidden)
        w_out = get_module(layer, arch.ffn_out).weight.detach().float()  # (hidden, F)
        scores.append((w_in.norm(dim=1) * w_out.norm(dim=0)).cpu())
    return scores


def _keep_top(scores: torch.Tensor, fraction_removed: float) -> list[int]:
    n = scores.numel()
    keep_n = n - int(math.floor(n * fraction_removed + 1e-9))
    return _top(scores, keep_n)


def _top(scores: torch.Tensor, keep_n: int) -> list[int]:
    return sorted(torch.argsort(scores, descending=True, stable=True)[:keep_n].tolist())


def prune_by_fraction_(model: nn.Module, heads: float, ffn: float) -> None:
    """Remove the lowest-magnitude `heads` fraction of heads and `ffn` fraction of neurons in every layer."""
    if heads:
        for i, s in enumerate(magnitude_head_scores(model)):
            prune_heads_(model, i, _keep_top(s, heads))
    if ffn:
        for i, s in enumerate(magnitude_neuron_scores(model)):
            prune_ffn_(model, i, _keep_top(s, ffn))


def prune_to_counts_(model: nn.Module, heads: list[int], neurons: list[int]) -> None:
    """Keep the `heads[i]` heads and `neurons[i]` FFN neurons of largest magnitude in each layer i."""
    for i, s in enumerate(magnitude_head_scores(model)):
        if heads[i] < len(s):
            prune_heads_(model, i, _top(s, heads[i]))
    for i, s in enumerate(magnitude_neuron_scores(model)):
        if neurons[i] < len(s):
            prune_ffn_(model, i, _top(s, neurons[i]))


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
    work_dir: Path | None = None,
    quiet: bool = False,
) -> PruneReport:
    """Remove the heads and FFN neurons the config asks for, in place; then recover if asked.

    With `config.iterations` = k > 1 the target is reached in k prune → recover rounds (see
    compressor/prune/schedule.py); the teacher is always the model as it was before the first round.

    Args:
        data: training sentences (LabelledData) for recovery, and for re-scoring a plan between rounds.
        eval_data: validation data to report accuracy after recovery.
        work_dir: where distillation keeps its checkpoints (default: a temporary directory).
    """
    params_before = sum(p.numel() for p in model.parameters())
    enc_before = sum(p.numel() for p in encoder_layers(model).parameters())
    k = config.iterations
    if config.recover != "none" and (data is None or tokenizer is None):
        raise ConfigError("recovery needs training data: pass --data")
    if k > 1 and config.recover == "none":
        logger.warning("`iterations` %d without recovery: the rounds only differ from one step by re-scoring", k)
    plan = target = None
    if config.plan is not None:
        from compressor.sensitivity.plan import Plan, apply_plan_

        plan = Plan.load(Path(config.plan))
        if k > 1:
            from compressor.prune.schedule import plan_target

            target = plan_target(model, plan)
    structure = ensure_structure(model)
    head_counts = [count_schedule(len(e["heads"]), config.heads, k, config.schedule) for e in structure["layers"]]
    ffn_counts = [count_schedule(e["intermediate"], config.ffn, k, config.schedule) for e in structure["layers"]]
    distill_steps = _split(config.recover_steps, k) if "distill" in config.recover else [0] * k
    teacher = copy.deepcopy(model).eval() if config.recover != "none" else None
    rounds: list[dict[str, Any]] = []
    recovery: dict[str, Any] = {}
    for t in range(k):
        step: dict[str, Any] = {"step": t + 1}
        if plan is None:
            prune_to_counts_(model, [c[t] for c in head_counts], [c[t] for c in ffn_counts])
        elif k == 1:
            apply_plan_(model, plan)
        else:
            from compressor.prune.schedule import rescore_step_

            share = kept_fractions(target.kept, k, config.schedule)[t]
            step["rescored"] = rescore_step_(
                model, plan, target, share, tokenizer=tokenizer, data=data, seed=config.seed + t
            )
        recovery = _recover_(
            model,
            teacher,
            tokenizer,
            config,
            data=data,
            eval_data=eval_data,
            distill_steps=distill_steps[t],
            work_dir=_round_dir(work_dir, t, k),
            quiet=quiet,
        )
        step |= {
            "structure": summary(structure_of(model)),
            "encoder_params": sum(p.numel() for p in encoder_layers(model).parameters()),
        } | recovery
        rounds.append(step)
        if k > 1:
            logger.info("round %d/%d: %s encoder parameters", t + 1, k, f"{step['encoder_params']:,}")
    report = PruneReport(
        summary(structure_of(model)),
        params_before,
        sum(p.numel() for p in model.parameters()),
        enc_before,
        sum(p.numel() for p in encoder_layers(model).parameters()),
        recovery,
        rounds if k > 1 else [],
    )
    logger.info("pruned: %s → %s parameters", f"{params_before:,}", f"{report.params_after:,}")
    return report


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
    eval_data: Any,
    distill_steps: int,
    work_dir: Path | None,
    quiet: bool,
) -> dict[str, Any]:
    """One round of the recovery `config.recover` asks for: reconstruct, then distill."""
    out: dict[str, Any] = {}
    if teacher is None:
        return out
    if "reconstruct" in config.recover:
        from compressor.prune.recover import reconstruct_

        out["reconstruct"] = reconstruct_(
            model, teacher, tokenizer, data, samples=config.samples, seed=config.seed, quiet=quiet
        )
    if "distill" in config.recover and distill_steps > 0:
        out["distill"] = distill_(
            model,
            teacher,
            tokenizer,
            config,
            data=data,
            eval_data=eval_data,
            work_dir=work_dir,
            quiet=quiet,
            steps=distill_steps,
        )
    return out


def distill_(
    model: nn.Module,
    teacher: nn.Module,
    tokenizer: Any,
    config: PruneConfig,
    *,
    data: Any,
    eval_data: Any = None,
    work_dir: Path | None = None,
    quiet: bool = False,
    steps: int | None = None,
) -> dict[str, Any]:
    """Fine-tune the pruned `model` in place with CE + λ·KL to the unpruned `teacher`.

    `config.recover_method` chooses what trains: `full` every weight; any other registered method is injected,
    trained and merged back, so the model keeps stock modules and its pruned shapes.

    Args:
        steps: optimizer steps (default `config.recover_steps`).
    """
    import tempfile

    import compressor.methods  # noqa: F401  (registers every method)
    from compressor.merge import merge
    from compressor.methods.base import METHODS, count_trainable
    from compressor.train import TrainConfig, distillation_loss, resolve_device, train

    steps = steps or config.recover_steps
    method = METHODS.get(config.recover_method)
    cfg = TrainConfig(
        max_steps=steps,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
        save_steps=max(50, steps // 4),
        logging_steps=max(10, steps // 10),
    )
    teacher.to(resolve_device(cfg.device))  # the Trainer moves the student there; the teacher must follow
    kl = distillation_loss(teacher, weight=config.distill_weight, temperature=config.temperature)

    def extra(m: nn.Module, inputs: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor:
        loss = kl(m, inputs, outputs)
        return loss if method.loss is None else loss + method.loss(m, inputs, outputs)

    wrapped = method.inject(model, method.config_cls())
    trainable = count_trainable(wrapped)
    with tempfile.TemporaryDirectory(prefix="compressor-distill-") as tmp:
        result = train(
            wrapped,
            tokenizer,
            cfg,
            data=data,
            eval_data=eval_data,
            work_dir=Path(work_dir or tmp),
            default_lr=method.default_lr,
            extra_loss=extra,
            find_unused_parameters=method.find_unused_parameters,
            quiet=quiet,
        )
    merged = merge(wrapped, config.recover_method)
    if merged is not model:
        raise PruneError(f"recovery method `{config.recover_method}` did not merge back into the model in place")
    model.__dict__.pop("peft_config", None)  # peft leaves it behind after merge_and_unload; a next round would warn
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return result.metrics | {"steps": result.steps, "method": config.recover_method, "trainable": trainable}
