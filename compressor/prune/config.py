"""The pruning settings (`PruneConfig`). Torch-free: the CLI builds its options from these fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from compressor.arch.table import LINEAR_ROLES
from compressor.errors import ConfigError
from compressor.schema import HASH_IF_SET, is_int, is_number
from compressor.train.config import LAYER_MAPS, PRECISIONS, check_share

SCHEDULES = ("geometric", "linear")
FALLBACKS = ("unk", "nearest", "sparse")
LAYERWISE_SCHEDULES = ("constant", "linear")
MAX_VOCAB_CODES = 64
RECOVER = ("none", "distill", "reconstruct", "reconstruct+distill")
HEADS_BY = ("magnitude", "update")
UNSTRUCTURED_BY = ("magnitude", "update")


@dataclass(kw_only=True)
class PruneConfig:
    kind: ClassVar[str] = "prune"
    version: ClassVar[int] = 1

    heads: float = field(default=0.0, metadata={"help": "Fraction of attention heads to remove in each layer."})
    ffn: float = field(default=0.0, metadata={"help": "Fraction of FFN neurons to remove in each layer."})
    plan: str | None = field(default=None, metadata={"help": "plan.json from `compressor analyse` (exact units)."})
    heads_by: str = field(
        default="magnitude",
        metadata={
            "help": "How `heads` picks the heads to remove: magnitude (smallest weights) or update (DSEE's "
            "structured step: the heads whose query/value rows changed least in fine-tuning, Σ|W − W_base|, "
            "against `update_base`)."
        },
    )
    update_base: str | None = field(
        default=None,
        metadata={
            "help": "With heads_by or unstructured_by update: the checkpoint fine-tuning started from (a directory, "
            "`minilm`, or in a recipe `finetune`: the base of the recipe's fine-tuning stage)."
        },
    )
    unstructured: float = field(
        default=0.0,
        metadata={
            "help": "Share of the entries of each `unstructured_roles` linear set to zero after the structured "
            "step, kept at zero through recovery (size only with sparse storage: ONNX Runtime on CPU runs zeros "
            "no faster); 0 = off.",
            HASH_IF_SET: True,
        },
    )
    unstructured_by: str = field(
        default="magnitude",
        metadata={
            "help": "Which entries `unstructured` zeroes: magnitude (smallest |W|) or update (DSEE's mask drawn "
            "from the fine-tuning update: smallest |W − W_base| against `update_base`).",
            HASH_IF_SET: True,
        },
    )
    unstructured_roles: list[str] = field(
        default_factory=lambda: ["query", "value"],
        metadata={
            "help": "Projections `unstructured` masks (DSEE masks the ones its adapters trained).",
            HASH_IF_SET: True,
        },
    )
    recover: str = field(default="none", metadata={"help": f"Recovery after pruning: {', '.join(RECOVER)}."})
    recover_steps: int = field(
        default=0, metadata={"help": "Distillation steps in total (split evenly over `iterations`; 0: none)."}
    )
    recover_epochs: float = field(
        default=0.0,
        metadata={
            "help": "Distillation length as passes over the training data (instead of `recover_steps`, so a recipe "
            "fits any data size); 0: use `recover_steps`."
        },
    )
    distill_weight: float = field(default=1.0, metadata={"help": "λ in CE + λ·KL(student ‖ teacher)."})
    label_weight: float = field(
        default=1.0,
        metadata={
            "help": "μ in μ·CE(labels) + λ·KL + the layer-wise terms: the weight of the task loss on the data's own "
            "labels; 0 distils from the unpruned model alone (its logits and layers, as TinyBERT's task "
            "distillation), so the student fits the model's function rather than the labels.",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )
    temperature: float = field(default=2.0, metadata={"help": "Distillation temperature T."})
    hidden_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the layer-wise loss: MSE of each kept layer's output (and the embeddings') against "
            "the unpruned model's same layer (TinyBERT, CoFi); 0 = logits only."
        },
    )
    attention_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the attention loss: KL of each kept head's attention distribution against the same "
            "head of the unpruned model (MiniLM); 0 = off."
        },
    )
    relation_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the self-relation loss: KL of each kept layer's query, key and value self-relations "
            "(softmax(q·qᵀ/√d) per relation head) against its teacher layer's (MiniLMv2). Needs no head in common, "
            "so it teaches the layers a plan kept below the teacher layer they learn; 0 = off.",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )
    layerwise_schedule: str = field(
        default="constant",
        metadata={
            "help": "How the hidden and attention weights move over the distillation: constant, or linear (from "
            "their value down to 0 at the last step, so the last steps fit the logits alone: TinyBERT's "
            "intermediate-then-prediction stages, blended into one run).",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )
    layer_map: str = field(
        default="uniform",
        metadata={
            "help": "Which teacher layer each student layer learns (hidden states, attention, relations): uniform "
            "(student layer i of S learns teacher layer (i+1)·T/S − 1, so the last learns the last: TinyBERT) or "
            "source (the teacher layer it was cut from, so every kept head learns its own attention map; suits "
            "plans whose kept layers span the model, e.g. layer_choice spread).",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )
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
    augment: int = field(
        default=0,
        metadata={
            "help": "Distil on this many rewritten copies of the training data too (words swapped for neighbours "
            "in the teacher's embedding, rows labelled by the teacher; TinyBERT). Steps still follow "
            "`recover_epochs` of the original data.",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )
    augment_rate: float = field(
        default=0.4,
        metadata={"help": "With `augment`, the chance that each known word of a row is replaced.", HASH_IF_SET: True},
    )
    vocab: str | None = field(
        default=None,
        metadata={
            "help": "Keep only the token ids this data uses (`train`: the training data, or a data file); the "
            "tokenizer is unchanged and the exported graph remaps ids."
        },
    )
    vocab_fallback: str = field(
        default="unk",
        metadata={
            "help": "With vocabulary pruning, where dropped token ids go: unk (the unknown row), nearest (the "
            "kept row with the most similar embedding) or sparse (a weighted sum of `vocab_codes` kept rows fitted "
            "to the dropped row)."
        },
    )
    vocab_codes: int = field(
        default=8,
        metadata={
            "help": "With `vocab_fallback: sparse`, kept rows per dropped id (orthogonal matching pursuit on the "
            "embedding).",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )

    dropout: float | None = field(
        default=None,
        metadata={
            "help": "Dropout of the student during the distillation (every dropout of the model set to this "
            "share; the saved model keeps its own settings); unset: the model's own (0.1 for BERT).",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )
    ema: float = field(
        default=0.0,
        metadata={
            "help": "End the distillation with an exponential moving average of the student's weights spanning "
            "about this share of its steps (e.g. 0.25), instead of the last step's weights; 0 = off.",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )
    precision: str = field(
        default="fp32",
        metadata={
            "help": "Arithmetic of the distillation: fp32, bf16 (autocast mixed precision, fp32 master weights) or "
            "auto (bf16 on a CUDA device that has it, else fp32; on an AMX CPU bf16 measured 1.1-1.3x faster).",
            HASH_IF_SET: True,  # added after runs were recorded: their stage hashes, and so --resume, stay
        },
    )

    def __post_init__(self) -> None:
        for name in ("heads", "ffn"):
            value = getattr(self, name)
            if not is_number(value) or not 0 <= value <= 1:
                raise ConfigError(f"`{name}` must be a fraction in [0, 1]; got {value!r}")
        if self.ffn == 1:
            raise ConfigError("`ffn` 1.0 would remove every FFN neuron of every layer; drop layers with a plan")
        if self.plan is not None and (self.heads or self.ffn):
            raise ConfigError("give either `plan` or the `heads`/`ffn` fractions, not both")
        if self.heads_by not in HEADS_BY:
            raise ConfigError(f"`heads_by` must be one of {', '.join(HEADS_BY)}; got {self.heads_by!r}")
        if self.heads_by == "update" and (not self.heads or self.update_base is None):
            raise ConfigError(
                "`heads_by: update` needs `heads` (the share of heads to remove) and `update_base` (the checkpoint "
                "fine-tuning started from)"
            )
        check_share("unstructured", self.unstructured)
        if self.unstructured_by not in UNSTRUCTURED_BY:
            raise ConfigError(
                f"`unstructured_by` must be one of {', '.join(UNSTRUCTURED_BY)}; got {self.unstructured_by!r}"
            )
        bad = [r for r in self.unstructured_roles if r not in LINEAR_ROLES]
        if bad or not self.unstructured_roles:
            raise ConfigError(
                f"`unstructured_roles` must be a non-empty subset of {', '.join(LINEAR_ROLES)}; "
                f"got {self.unstructured_roles!r}"
            )
        if self.unstructured and self.unstructured_by == "update" and self.update_base is None:
            raise ConfigError("`unstructured_by: update` needs `update_base` (the checkpoint fine-tuning began from)")
        if self.update_base is not None and not self.uses_update_base:
            raise ConfigError("`update_base` is only used with `heads_by: update` or `unstructured_by: update`")
        if self.recover not in RECOVER:
            raise ConfigError(f"`recover` must be one of {', '.join(RECOVER)}; got {self.recover!r}")
        if self.augment < 0:
            raise ConfigError(f"`augment` must be a number of copies, 0 or more; got {self.augment!r}")
        if not 0.0 < self.augment_rate <= 1.0:
            raise ConfigError(f"`augment_rate` must be in (0, 1]; got {self.augment_rate!r}")
        if self.vocab_fallback not in FALLBACKS:
            raise ConfigError(f"`vocab_fallback` must be one of {', '.join(FALLBACKS)}; got {self.vocab_fallback!r}")
        codes = self.vocab_codes
        if not is_int(codes) or not 1 <= codes <= MAX_VOCAB_CODES:
            raise ConfigError(f"`vocab_codes` must be an integer between 1 and {MAX_VOCAB_CODES}; got {codes!r}")
        if self.dropout is not None:
            check_share("dropout", self.dropout, "in [0, 1) (or unset for the model's own)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"`precision` must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.recover_steps < 0:
            raise ConfigError(f"`recover_steps` must be >= 0; got {self.recover_steps!r}")
        if not self.recover_epochs >= 0:
            raise ConfigError(f"`recover_epochs` must be >= 0; got {self.recover_epochs!r}")
        if self.recover_epochs and self.recover_steps:
            raise ConfigError("give `recover_steps` or `recover_epochs`, not both")
        if "distill" in self.recover and self.recover_steps == 0 and not self.recover_epochs:
            self.recover_steps = 500
        if (self.recover_steps or self.recover_epochs) and self.recover == "none":
            self.recover = "distill"
        if (self.recover_steps or self.recover_epochs) and "distill" not in self.recover:
            raise ConfigError(
                f"`recover_steps` / `recover_epochs` set the distillation length, but recover is {self.recover!r}; "
                "use recover: reconstruct+distill, or set them to 0"
            )
        if self.temperature <= 0 or self.distill_weight < 0:
            raise ConfigError("`temperature` must be positive and `distill_weight` non-negative")
        schedule = self.layerwise_schedule
        if schedule not in LAYERWISE_SCHEDULES:
            raise ConfigError(
                f"`layerwise_schedule` must be one of {', '.join(LAYERWISE_SCHEDULES)}; got {schedule!r}"
            )
        if self.layer_map not in LAYER_MAPS:
            raise ConfigError(f"`layer_map` must be one of {', '.join(LAYER_MAPS)}; got {self.layer_map!r}")
        check_share("ema", self.ema, "of the steps in [0, 1) (0: off)")
        for name in ("hidden_weight", "attention_weight", "relation_weight", "label_weight"):
            value = getattr(self, name)
            if not is_number(value) or not value >= 0:
                raise ConfigError(f"`{name}` must be zero or positive; got {value!r}")
        weight = self.label_weight
        teacher_terms = self.distill_weight + self.hidden_weight + self.attention_weight + self.relation_weight
        if "distill" in self.recover and weight == 0 and not teacher_terms > 0:
            raise ConfigError(
                "`label_weight` 0 with every distillation weight 0 leaves the distillation nothing to learn from; "
                "keep `distill_weight` (or a layer-wise weight) above 0"
            )
        if self.lr is not None and not 0 < self.lr < 1:
            raise ConfigError(f"`lr` must be in (0, 1); got {self.lr!r}")
        for name in ("batch_size", "samples", "iterations"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer; got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"`schedule` must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if "distill" in self.recover and not self.recover_epochs and self.recover_steps < self.iterations:
            raise ConfigError(f"`recover_steps` ({self.recover_steps}) must be >= `iterations` ({self.iterations})")
        _check_recover_method(self.recover_method, distill="distill" in self.recover)

    @property
    def uses_update_base(self) -> bool:
        """Whether a step ranks by the fine-tuning update (and so needs the base checkpoint)."""
        return self.heads_by == "update" or bool(self.unstructured and self.unstructured_by == "update")


def _check_recover_method(name: str, *, distill: bool) -> None:
    import compressor.methods  # noqa: F401  (registers every method)
    from compressor.methods.base import METHODS

    method = METHODS.get(name)  # ConfigError naming the known methods
    if method.prepare is not None:
        raise ConfigError(f"`recover_method` {name} changes the model's structure before training; choose another")
    if name != "full" and not distill:
        raise ConfigError(f"`recover_method` {name} trains during distillation; add `recover` distill")
