"""HF Trainer glue: tokenisation, the training loop, evaluation, and the distillation loss.

Training goes through `transformers.Trainer`, so the same code runs on one CPU, several GPUs, or several
machines under `accelerate launch` / `torchrun`, and checkpoints resume.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.arch.parts import max_tokens, model_inputs
from compressor.data import LabelledData
from compressor.errors import CompressorError
from compressor.task import REGRESSION_METRICS, regression_metrics
from compressor.train.config import TrainConfig, resolve_device

logger = logging.getLogger(__name__)

# Outputs a model returns while layer-wise distillation reads them; evaluation compares logits only (the others differ
# in sequence length from batch to batch and cannot be gathered).
EXTRA_OUTPUTS = ("hidden_states", "attentions")
ExtraLoss = Callable[[nn.Module, dict[str, torch.Tensor], Any], torch.Tensor]
EMA_FILE = "ema.safetensors"  # the weight average's state, inside each Trainer checkpoint


class WeightAverage:
    """An exponential moving average of the parameters of `model` that train (Polyak averaging): after each
    optimizer step, avg ← avg + (1 - decay)·(param - avg), with decay = 1 - 1/(share·steps), so the average spans
    about `share` of the run's steps. The update is torch's own (`swa_utils.get_ema_multi_avg_fn`). The store is
    written here because `AveragedModel` deep-copies the whole module (frozen weights, the distillation's hooks and
    what they hold) and has no place in the Trainer's checkpoints, which a resumed run needs.
    """

    def __init__(self, model: nn.Module, share: float) -> None:
        self.share = share
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names, self.params = [n for n, _ in trained], [p for _, p in trained]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = 0.0
        self.updates = 0

    def start(self, total_steps: int) -> None:
        """Fix the decay from the run's length (known once the Trainer has counted its steps)."""
        self.decay = 1.0 - 1.0 / max(1.0, self.share * total_steps)

    def reset(self) -> None:
        """Restart the average from the weights as they are."""
        for avg, p in zip(self.shadow, self.params, strict=True):
            avg.copy_(p.detach())

    @torch.no_grad()
    def update(self) -> None:
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        get_ema_multi_avg_fn(self.decay)(self.shadow, [p.detach() for p in self.params], self.updates)
        self.updates += 1

    @torch.no_grad()
    def apply(self) -> None:
        """Put the average into the model's parameters."""
        for avg, p in zip(self.shadow, self.params, strict=True):
            p.copy_(avg)

    def save(self, path: Path) -> None:
        """The average as safetensors, written to a temporary name and moved into place."""
        from safetensors.torch import save_file

        tmp = path.with_name(path.name + ".tmp")
        save_file({n: t.detach().cpu().contiguous() for n, t in zip(self.names, self.shadow, strict=True)}, str(tmp))
        tmp.replace(path)

    @torch.no_grad()
    def load(self, path: Path) -> None:
        """The average saved by `save` for the same trainable parameters, or a CompressorError saying what differs."""
        from safetensors.torch import load_file

        state = load_file(str(path))
        if sorted(state) != sorted(self.names):
            raise CompressorError(
                f"{path} averages other parameters than this run trains ({len(state)} against {len(self.names)}); "
                "start the run again without --resume"
            )
        for name, avg in zip(self.names, self.shadow, strict=True):
            if state[name].shape != avg.shape:
                raise CompressorError(
                    f"{path}: `{name}` has shape {tuple(state[name].shape)}, the model's is {tuple(avg.shape)}; "
                    "start the run again without --resume"
                )
            avg.copy_(state[name])


def tokenize(data: LabelledData, tokenizer: Any, max_length: int) -> Any:
    """A datasets.Dataset of input ids, attention masks, token types and labels (padding left to the collator)."""
    dataset = data.to_dataset()
    pair = "text_pair" in dataset.column_names

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        args = (batch["text"], batch["text_pair"]) if pair else (batch["text"],)
        return tokenizer(*args, truncation=True, max_length=max_length)

    from datasets import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    drop = [c for c in dataset.column_names if c != "label"]
    silence = not logger.isEnabledFor(logging.INFO) and not are_progress_bars_disabled()  # --quiet
    if silence:
        disable_progress_bars()
    try:
        encoded = dataset.map(encode, batched=True, remove_columns=drop, desc="tokenising", load_from_cache_file=False)
    finally:
        if silence:
            enable_progress_bars()
    return encoded.rename_column("label", "labels")


def fit_length(model: nn.Module, max_length: int) -> int:
    """`max_length`, lowered to the model's position embeddings (longer inputs would not fit the model)."""
    # RoBERTa's position table holds padding_idx + 1 fewer tokens than its size
    limit = max_tokens(model) if hasattr(model, "config") else None
    if isinstance(limit, int) and max_length > limit:  # the model's limit, not the user's mistake: info, not warning
        logger.info(
            "max_length %d exceeds the model's %d positions; truncating inputs to %d", max_length, limit, limit
        )
        return limit
    return max_length


@dataclass
class TrainResult:
    metrics: dict[str, float]
    seconds: float
    steps: int
    is_main_process: bool = True


def _compute_metrics(pred: Any) -> dict[str, float]:
    """Accuracy of the arg-max; for a one-output (regression) head, Pearson, Spearman and MSE of the scores."""
    import numpy as np

    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    if logits.ndim == 2 and logits.shape[-1] == 1:
        return regression_metrics(logits, pred.label_ids)
    return {"accuracy": float((np.argmax(logits, axis=-1) == pred.label_ids).mean())}


EVAL_KEYS = ("accuracy", *REGRESSION_METRICS, "loss")  # what `train` keeps of an evaluation, as `eval_<key>`


def train(
    model: nn.Module,
    tokenizer: Any,
    cfg: TrainConfig,
    *,
    data: LabelledData,
    eval_data: LabelledData | None,
    work_dir: Path,
    default_lr: float = 5e-5,
    extra_loss: ExtraLoss | None = None,
    resume: bool = False,
    find_unused_parameters: bool = False,
    quiet: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    task_weight: float = 1.0,
) -> TrainResult:
    """Train the parameters of `model` that require grad; checkpoints go to `work_dir/checkpoints`.

    Args:
        extra_loss: added to the model's task loss (a method's regulariser, or distillation).
        task_weight: multiplies the model's task loss on the labels (0: `extra_loss` alone trains).
        on_step: called before each optimizer step with (steps done, steps in all), resumed runs included.
        resume: continue from the newest checkpoint in `work_dir` if there is one.
    """
    from transformers import DataCollatorWithPadding, TrainingArguments

    device = resolve_device(cfg.device)
    max_length = fit_length(model, cfg.max_length)
    train_set = tokenize(data, tokenizer, max_length)
    eval_set = tokenize(eval_data, tokenizer, max_length) if eval_data is not None else None
    ckpt_dir = Path(work_dir) / "checkpoints"
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr or default_lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        use_cpu=device == "cpu",
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
        logging_steps=cfg.logging_steps,
        eval_strategy="epoch" if eval_set is not None else "no",
        report_to=[],
        disable_tqdm=quiet,
        dataloader_num_workers=0,
        remove_unused_columns=True,
        ddp_find_unused_parameters=find_unused_parameters,
        label_names=["labels"],
    )
    trainer = _LossTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics,
        extra_loss=extra_loss,
        task_weight=task_weight,
    )
    progress = _report_progress(trainer, quiet)
    if on_step is not None:
        trainer.add_callback(_step_callback(on_step))
    last = _last_checkpoint(ckpt_dir) if resume else None
    if last:
        logger.info("resuming from %s", last)
    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    if average is not None:
        trainer.add_callback(_average_callback(average, last))
    start = time.perf_counter()
    with warnings.catch_warnings():
        # checkpoint rotation warns on file systems with coarse mtimes, then orders by step number anyway
        warnings.filterwarnings("ignore", message="mtime may not be reliable")
        out = trainer.train(
            resume_from_checkpoint=str(last) if last else None, ignore_keys_for_eval=list(EXTRA_OUTPUTS)
        )
    seconds = time.perf_counter() - start
    metrics = {"train_loss": float(out.training_loss), "train_seconds": round(seconds, 1)}

    def evaluation(prefix: str) -> None:
        last = progress.last_eval  # the last epoch's evaluation, when training ended right there
        ev = (
            last[1]
            if last is not None and last[0] == out.global_step
            else trainer.evaluate(ignore_keys=list(EXTRA_OUTPUTS))
        )
        metrics.update({f"{prefix}eval_{k}": float(ev[f"eval_{k}"]) for k in EVAL_KEYS if f"eval_{k}" in ev})

    if average is not None:
        if eval_set is not None:  # the last step's weights too, so that the run says what the average changed
            evaluation("last_step_")
        average.apply()
        progress.last_eval = None  # it scored other weights
    if eval_set is not None:
        evaluation("")
    model.eval()
    return TrainResult(metrics, seconds, int(out.global_step), trainer.is_world_process_zero())


def _make_trainer_class() -> type:
    from transformers import Trainer

    class LossTrainer(Trainer):
        """Trainer whose loss is the model's task loss (times `task_weight`) plus an optional extra term."""

        def __init__(
            self, *args: Any, extra_loss: ExtraLoss | None = None, task_weight: float = 1.0, **kwargs: Any
        ) -> None:
            super().__init__(*args, **kwargs)
            self.extra_loss = extra_loss
            self.task_weight = task_weight

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            outputs = model(**inputs)
            loss = outputs.loss
            if self.task_weight != 1.0 and model.training:  # evaluation reports the plain task loss
                loss = loss * self.task_weight
            if self.extra_loss is not None and model.training:
                loss = loss + self.extra_loss(model, inputs, outputs)
            return (loss, outputs) if return_outputs else loss

    return LossTrainer


def _LossTrainer(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - behaves like a class
    return _make_trainer_class()(*args, **kwargs)


def _step_callback(on_step: Callable[[int, int], None]) -> Any:
    from transformers import TrainerCallback

    class StepCallback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            on_step(state.global_step, state.max_steps)

    return StepCallback()


def _average_callback(average: WeightAverage, resumed: Path | None) -> Any:
    """Moves `average` after each optimizer step, stores it in each checkpoint (main process only) and restores it
    from the one a run resumes from (`train` puts it into the model once training ends)."""
    from transformers import TrainerCallback

    class AverageCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            average.start(state.max_steps)
            if resumed is None:
                return
            if (resumed / EMA_FILE).is_file():
                average.load(resumed / EMA_FILE)
            else:  # saved by a run without the average, or killed between the checkpoint and its average
                logger.warning("%s holds no weight average; it restarts from the resumed weights", resumed)
                average.reset()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            average.update()

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            if state.is_world_process_zero:
                average.save(Path(args.output_dir) / f"checkpoint-{state.global_step}" / EMA_FILE)

    return AverageCallback()


def _report_progress(trainer: Any, quiet: bool) -> Any:
    """One progress bar for training (and one for each evaluation), and one line per epoch on stderr: loss, accuracy
    when there is validation data, learning rate in scientific notation. Nothing under `--quiet`. Stdout stays
    for results (`--json`). Returns the callback, which also remembers the last evaluation."""
    import sys

    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    class EpochLines(TrainerCallback):
        def __init__(self) -> None:
            self.bars = None if quiet else ProgressCallback()  # the Trainer's own bars, on stderr
            self.seen = 0  # log_history entries already summarised
            self.last_eval: tuple[int, dict[str, float]] | None = None

        def _bars(self, event: str, *args: Any, **kwargs: Any) -> None:
            if self.bars is not None:
                getattr(self.bars, event)(*args, **kwargs)

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self._bars("on_train_begin", *args, **kwargs)

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self._bars("on_step_end", *args, **kwargs)

        def on_prediction_step(self, *args: Any, **kwargs: Any) -> None:
            self._bars("on_prediction_step", *args, **kwargs)

        def on_predict(self, *args: Any, **kwargs: Any) -> None:
            self._bars("on_predict", *args, **kwargs)

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            self._bars("on_train_end", *args, **kwargs)

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if args.eval_strategy == "no":  # else the evaluation that follows prints the line, with its accuracy
                self._line(args, state, None)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
            self._bars("on_evaluate", args, state, control, metrics=metrics, **kwargs)
            self.last_eval = (state.global_step, dict(metrics or {}))
            self._line(args, state, metrics)

        def _line(self, args: Any, state: Any, metrics: dict | None) -> None:
            if quiet or not state.is_world_process_zero:
                return
            new = state.log_history[self.seen :]
            self.seen = len(state.log_history)
            losses = [h["loss"] for h in new if "loss" in h]
            rates = [h["learning_rate"] for h in new if "learning_rate" in h]
            parts = [f"loss {sum(losses) / len(losses):.4f}" if losses else "loss -"]
            if metrics and "eval_accuracy" in metrics:
                parts.append(f"accuracy {metrics['eval_accuracy']:.4f}")
            elif metrics and "eval_pearson" in metrics:
                parts.append(f"pearson {metrics['eval_pearson']:.4f}")
            if rates:
                parts.append(f"lr {rates[-1]:.1e}")
            epochs = getattr(state, "num_train_epochs", 0) or args.num_train_epochs  # the real count under max_steps
            text = f"epoch {state.epoch or 0:.2f}/{epochs:g}: " + ", ".join(parts)
            text += f" ({state.global_step} steps)"
            bar = None if self.bars is None else self.bars.training_bar
            if bar is not None:
                bar.write(text, file=sys.stderr)
            else:
                logger.info(text)

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    callback = EpochLines()
    trainer.add_callback(callback)
    return callback


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint: the Trainer writes `trainer_state.json` last, so a checkpoint without it,
    or with one that does not parse (killed while it was being written), was cut short and is skipped."""
    if not ckpt_dir.is_dir():
        return None
    ckpts = [p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    complete = [p for p in ckpts if _readable_state(p / "trainer_state.json")]
    for p in sorted(set(ckpts) - set(complete)):
        logger.warning("skipping %s: it was interrupted while being saved", p)
    return max(complete, key=lambda p: int(p.name.split("-")[-1])) if complete else None


def _readable_state(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, UnicodeDecodeError, ValueError):
        return False


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tokenizer: Any,
    data: LabelledData,
    *,
    batch_size: int = 128,
    max_length: int = 128,
    device: str | None = None,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of `model` on `data`, streamed in batches; for regression data, Pearson,
    Spearman and the mean squared error (`loss` is the MSE too)."""
    model.eval()
    max_length = fit_length(model, max_length)
    inputs = model_inputs(model)
    dev = next(model.parameters()).device if device is None else torch.device(device)
    correct = total = 0
    loss_sum = 0.0
    scores: list[float] = []
    texts, pairs, labels = data.texts, data.text_pairs, data.labels
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        args = (chunk, pairs[start : start + batch_size]) if pairs else (chunk,)
        enc = tokenizer(*args, truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(dev)
        logits = model(**{k: v for k, v in enc.items() if k in inputs}).logits  # only what the model reads
        total += len(chunk)
        if data.is_regression:
            scores += logits[:, 0].float().cpu().tolist()
            continue
        y = torch.tensor(labels[start : start + batch_size], device=dev)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    if data.is_regression:
        metrics = regression_metrics(scores, labels)
        return metrics | {"loss": metrics["mse"], "examples": float(total)}
    return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1), "examples": float(total)}


def steps_for(n_examples: int, cfg: TrainConfig) -> int:
    """Optimizer steps a run will take (single process)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(n_examples / cfg.batch_size) * math.ceil(cfg.epochs))
