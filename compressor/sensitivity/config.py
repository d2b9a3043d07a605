"""`AnalyseConfig` and the budget string (`params=0.6`, `flops=0.5`, `latency-ms=4`).

Kept free of torch so that the CLI can validate options before loading anything heavy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from compressor.errors import ConfigError
from compressor.schema import HASH_IF_SET, is_int

# The registered scorer names (compressor/sensitivity/__init__.py registers exactly these; a test checks it).
SCORER_NAMES = ("fisher", "head-gradient", "magnitude", "taylor", "tensor-loss")
DATA_FREE_SCORERS = ("magnitude",)  # the registered scorers whose `needs_data` is False (a test checks it)
BUDGET_KEYS = {"params": "params", "flops": "flops", "latency-ms": "latency", "latency_ms": "latency"}
BUDGET_HELP = (
    "exactly one of params=F (fraction of encoder parameters kept), flops=F (fraction of encoder FLOPs "
    "kept at seq_len) or latency-ms=T (p50 target in ms on this CPU), or `none` for a report without a plan"
)


@dataclass(frozen=True)
class Budget:
    """One budget: `metric` is params, flops or latency; `value` a fraction kept (params, flops) or milliseconds."""

    metric: str
    value: float

    @property
    def is_fraction(self) -> bool:
        return self.metric in ("params", "flops")

    def __str__(self) -> str:
        key = "latency-ms" if self.metric == "latency" else self.metric
        return f"{key}={self.value:.10g}"


def needs_data(scorer: str) -> bool:
    """Whether a scorer reads labelled examples (all but the data-free ones)."""
    return scorer not in DATA_FREE_SCORERS


def parse_budget(text: str) -> Budget:
    """`"params=0.6"` → Budget("params", 0.6); a ConfigError naming `budget` for anything else."""
    items = [item for item in re.split(r"[,\s]+", text.strip()) if item]
    if not items:
        raise ConfigError(f"`budget` is empty; give {BUDGET_HELP}")
    parsed: list[tuple[str, str]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep or not raw.strip():
            raise ConfigError(f"`budget` must look like KEY=VALUE (e.g. params=0.6); got {item!r}")
        if key not in BUDGET_KEYS:
            raise ConfigError(f"`budget`: unknown key `{key}`; use params=F, flops=F or latency-ms=T")
        parsed.append((BUDGET_KEYS[key], raw.strip()))
    if len(parsed) > 1:
        keys = ", ".join(k for k, _ in parsed)
        raise ConfigError(
            f"`budget`: give exactly one of params=F, flops=F or latency-ms=T; got {len(parsed)} ({keys})"
        )
    metric, raw = parsed[0]
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"`budget`: {metric} needs a number; got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"`budget`: {metric} needs a finite number; got {raw!r}")
    if metric in ("params", "flops") and not 0 < value <= 1:
        raise ConfigError(f"`budget`: {metric} is the fraction kept and must be in (0, 1]; got {value:g}")
    if metric == "latency" and value <= 0:
        raise ConfigError(f"`budget`: latency-ms is a target in milliseconds and must be positive; got {value:g}")
    return Budget(metric, value)


LAYER_CHOICES = ("score", "spread")
SPREAD_NEEDS_COUNT = "`layer_choice` spread needs `keep_layers` or `depth` (how many layers to spread)"


def parse_layer_choice(value: Any) -> str:
    """`score`, `spread` or comma-separated layer indices (normalised to `0,2,4`); anything else: a ConfigError."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"`layer_choice` must be score, spread or layer indices such as 0,2,4; got {value!r}")
    text = value.strip().lower()
    if text in LAYER_CHOICES:
        return text
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"`layer_choice` must be score, spread or layer indices such as 0,2,4; got {value!r}")
    indices = [int(p) for p in parts]
    if len(set(indices)) != len(indices):
        raise ConfigError(f"`layer_choice` names a layer twice: {value!r}")
    return ",".join(str(i) for i in sorted(indices))


def layer_indices(choice: str) -> list[int] | None:
    """The layers a `layer_choice` names, or None for a rule (score, spread)."""
    return None if choice in LAYER_CHOICES else [int(p) for p in choice.split(",")]


@dataclass(kw_only=True)
class AnalyseConfig:
    """What `analyse` scores, on how much data, and the budget its plan must meet."""

    kind: ClassVar[str] = "analyse"
    version: ClassVar[int] = 1

    scorer: str = field(
        default="head-gradient",
        metadata={
            "help": "Importance scorer: head-gradient (Michel et al. 2019), taylor (|θ·∂L/∂θ|), tensor-loss "
            "(our proxy of Sensi-BERT's per-tensor ranking), fisher (Kwon et al. 2022) or magnitude (data-free)."
        },
    )
    budget: str | None = field(default="params=0.6", metadata={"help": f"The plan's budget: {BUDGET_HELP}."})
    samples: int = field(default=512, metadata={"help": "Labelled examples used for scoring (drawn with `seed`)."})
    seq_len: int = field(
        default=128,
        metadata={
            "help": "Max tokens per example when scoring, and the sequence length of the FLOPs and latency budgets."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Examples per forward/backward pass while scoring."})
    min_heads: int = field(
        default=1, metadata={"help": "Heads every kept layer keeps at least (0 allowed: layers may lose all heads)."}
    )
    min_neurons: int = field(
        default=1,
        metadata={"help": "FFN neurons every kept layer keeps at least (0 allowed: a layer's FFN may vanish)."},
    )
    allow_layer_drop: bool = field(
        default=False,
        metadata={"help": "Drop whole layers with the lowest score per cost when that keeps more total importance."},
    )
    keep_layers: int | None = field(
        default=None,
        metadata={
            "help": "Keep exactly this many layers (depth as a plan dimension): every choice of which to drop is "
            "tried (the lowest value per cost when there are too many), the rest of the budget goes to heads and "
            "neurons; unset = all layers (or --allow-layer-drop)."
        },
    )
    depth: float | None = field(
        default=None,
        metadata={
            "help": "Share of the layers kept, e.g. 0.5 keeps 3 of 6 or 6 of 12 (rounded, at least one): "
            "`keep_layers` as a fraction of the model's depth."
        },
    )
    layer_choice: str = field(
        default="score",
        metadata={
            "help": "Which layers a plan keeps: score (the set that keeps the most importance; with keep_layers or "
            "depth every choice is tried), spread (keep_layers or depth layers evenly spaced from the first to the "
            "last, as students are often initialised from every other layer) or the indices themselves, e.g. "
            "0,2,4 (the budget then goes to their heads and neurons).",
            HASH_IF_SET: True,
        },
    )
    rescore: bool = field(
        default=False,
        metadata={
            "help": "When the plan drops layers, score the kept layers' heads and neurons again in the model "
            "without the dropped ones (the order they will run in) and allocate the budget by those scores; the "
            "first scores still choose which layers go. One more scoring pass.",
            HASH_IF_SET: True,
        },
    )
    hidden: float = field(
        default=1.0,
        metadata={
            "help": "Fraction of the hidden size (the residual stream's dimensions) the plan keeps, the least "
            "important dimensions removed (Fisher of a mask on the stream; magnitude without data); heads and FFN "
            "neurons are then allocated under the budget at that width. 1 = no width pruning."
        },
    )
    density: float = field(
        default=0.5,
        metadata={
            "help": "tensor-loss only: fraction of each tensor's weights kept when it is magnitude-pruned alone."
        },
    )
    threads: int = field(default=2, metadata={"help": "CPU threads for the latency cost table (latency-ms budget)."})
    seed: int = field(default=0, metadata={"help": "Seed for drawing the scoring sample."})
    latency_cache: str | None = field(
        default=None,
        metadata={"help": "Directory for the measured latency cost table (default: ~/.cache/compressor/latency)."},
    )

    def __post_init__(self) -> None:
        if self.scorer not in SCORER_NAMES:
            raise ConfigError(f"`scorer` must be one of {', '.join(SCORER_NAMES)}; got {self.scorer!r}")
        if self.budget is not None and self.budget.strip().lower() == "none":
            self.budget = None
        if self.budget is not None:
            self.budget = str(parse_budget(self.budget))
        for name in ("samples", "seq_len", "batch_size", "threads"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer; got {value!r}")
        for name in ("min_heads", "min_neurons"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise ConfigError(f"`{name}` must be an integer >= 0; got {value!r}")
        if self.keep_layers is not None and (not is_int(self.keep_layers) or self.keep_layers < 1):
            raise ConfigError(f"`keep_layers` must be a positive integer or unset; got {self.keep_layers!r}")
        if self.depth is not None and not 0 < self.depth <= 1:
            raise ConfigError(f"`depth` is the share of layers kept and must be in (0, 1]; got {self.depth!r}")
        if self.depth is not None and self.keep_layers is not None:
            raise ConfigError("give `keep_layers` or `depth`, not both")
        self.layer_choice = parse_layer_choice(self.layer_choice)
        if self.layer_choice == "spread" and self.keep_layers is None and self.depth is None:
            raise ConfigError(SPREAD_NEEDS_COUNT)
        listed = layer_indices(self.layer_choice)
        if listed is not None and self.keep_layers is not None and len(listed) != self.keep_layers:
            raise ConfigError(
                f"`layer_choice` names {len(listed)} layers but `keep_layers` is {self.keep_layers}; give one of them"
            )
        if not 0 < self.hidden <= 1:
            raise ConfigError(
                f"`hidden` is the fraction of the hidden size kept and must be in (0, 1]; got {self.hidden!r}"
            )
        if self.hidden < 1 and self.budget is not None and parse_budget(self.budget).metric == "latency":
            raise ConfigError(
                "`hidden` below 1 needs a params or flops budget (the latency table is for the full width)"
            )
        if not 0 < self.density < 1:
            raise ConfigError(f"`density` must be in (0, 1); got {self.density!r}")

    @property
    def parsed_budget(self) -> Budget | None:
        return None if self.budget is None else parse_budget(self.budget)
