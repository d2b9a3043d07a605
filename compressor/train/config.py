"""The training settings (`TrainConfig`). Torch-free: the CLI builds its options from these fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from compressor.errors import ConfigError
from compressor.schema import HASH_IF_SET, is_number


@dataclass(kw_only=True)
class TrainConfig:
    kind: ClassVar[str] = "train"
    version: ClassVar[int] = 1

    epochs: float = field(default=1.0, metadata={"help": "Passes over the training data."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: use epochs)."})
    lr: float | None = field(default=None, metadata={"help": "Peak learning rate (default: the method's)."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    eval_batch_size: int = field(default=128, metadata={"help": "Evaluation batch size per device."})
    max_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, shuffling and routing."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of steps with linear warm-up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (GPU or recent CPU)."})
    fp16: bool = field(default=False, metadata={"help": "float16 mixed precision (CUDA only)."})
    save_steps: int = field(default=200, metadata={"help": "Checkpoint every N steps (for --resume)."})
    logging_steps: int = field(default=50, metadata={"help": "Log the loss every N steps."})
    ema: float = field(
        default=0.0,
        metadata={
            "help": "Keep an exponential moving average of the trained weights spanning about this share of the "
            "steps (decay 1 - 1/(share x steps)) and end with it instead of the last step's weights; 0 = off.",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )

    def __post_init__(self) -> None:
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError(f"`epochs` must be positive (or set `max_steps`), got {self.epochs!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"`max_steps` must be a positive integer or -1, got {self.max_steps!r}")
        if self.lr is not None and not (0 < self.lr < 1):
            raise ConfigError(f"`lr` must be in (0, 1), got {self.lr!r}")
        for name in ("batch_size", "eval_batch_size", "max_length", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"`{name.replace('_', '-')}` must be a positive integer, got {getattr(self, name)!r}"
                )
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio!r}")
        check_share("ema", self.ema, "of the steps in [0, 1) (0: off)")
        if self.bf16 and self.fp16:
            raise ConfigError("choose one of `bf16` and `fp16`, not both")
        resolve_device(self.device)


def check_share(name: str, value: object, what: str = "in [0, 1)") -> None:
    """`value` is a number (not a bool) in [0, 1), or a ConfigError: "`NAME` must be a share WHAT; got VALUE"."""
    if not is_number(value) or not 0 <= value < 1:
        raise ConfigError(f"`{name}` must be a share {what}; got {value!r}")


LAYER_MAPS = ("uniform", "source")  # which teacher layer a student layer learns (LayerMap.between)
PRECISIONS = ("fp32", "bf16", "auto")


def use_bf16(precision: str, device: str) -> bool:
    """Whether training at `precision` on the resolved `device` runs in bfloat16 mixed precision. `auto` picks it
    on a CUDA device with bf16 support only. On this project's AMX Xeon, bf16 autocast made the distillation step
    1.1-1.3x faster across runs (`python bench/precision.py`), and a full bf16 distillation run beside other work
    was no faster than fp32: too uncertain a gain to change a CPU run's arithmetic by default.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"`precision` must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    import torch

    return device.startswith("cuda") and bool(torch.cuda.is_bf16_supported())


def resolve_device(device: str) -> str:
    """`auto` → cuda if present else cpu; a clear error for a device that is not there."""
    import torch  # here, not at the top: the CLI reads this config without the training stack

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} was requested but no CUDA device is available; use --device cpu")
        return device
    raise ConfigError(f"`device` must be auto, cpu, cuda or cuda:N; got {device!r}")
