"""The structure spec of a pruned model: what each kept layer keeps, stored in config.json.

`config.compressor_structure` (version 1):
    {"version": 1, "source_layers": L, "source_heads": H, "source_intermediate": F,
     "layers": [{"source": i, "heads": [kept original head ids], "intermediate": n,
                 "neurons": [kept original neuron ids] | null}],
     "vocab": {"source_size": V, "kept": k} | null,
     "hidden": {"source": D, "kept": [kept original dimensions of the residual stream]} | null}

`hidden` (width pruning) is optional: a structure written before it existed reads as full width.

`load_model` calls `build_shapes_` on a freshly built full-size model so the saved weights fit exactly; we never
use transformers' `pruned_heads` (removed in v5).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from compressor.arch.table import arch_for
from compressor.errors import ModelError, PruneError

if TYPE_CHECKING:  # torch only for annotations: reading a checkpoint's config needs no training stack
    from torch import nn

VERSION = 1


def ensure_structure(model: nn.Module) -> dict[str, Any]:
    """The model's structure dict, created (unpruned) on first use."""
    config = model.config
    structure = getattr(config, "compressor_structure", None)
    if structure:
        return structure
    arch = arch_for(config.model_type)
    layers, heads, width = arch.num_layers(config), arch.num_heads(config), arch.intermediate_size(config)
    structure = {
        "version": VERSION,
        "source_layers": layers,
        "source_heads": heads,
        "source_intermediate": width,
        "layers": [
            {"source": i, "heads": list(range(heads)), "intermediate": width, "neurons": None} for i in range(layers)
        ],
        "vocab": None,
        "hidden": None,
    }
    config.compressor_structure = structure
    return structure


def structure_of(model: nn.Module) -> dict[str, Any]:
    """A copy of the model's structure (the unpruned one if never pruned)."""
    return copy.deepcopy(ensure_structure(model))


def is_pruned(structure: dict[str, Any]) -> bool:
    return (
        len(structure["layers"]) != structure["source_layers"]
        or structure.get("vocab") is not None
        or structure.get("hidden") is not None
        or any(
            len(e["heads"]) != structure["source_heads"] or e["intermediate"] != structure["source_intermediate"]
            for e in structure["layers"]
        )
    )


def hidden_positions(student: dict[str, Any], teacher: dict[str, Any]) -> list[int] | None:
    """Where the student's residual-stream dimensions sit in the teacher's (None when both have the same width).

    For matching a width-pruned student to the model it was pruned from (distillation, reconstruction).
    """
    kept_s = (student.get("hidden") or {}).get("kept")
    kept_t = (teacher.get("hidden") or {}).get("kept")
    if kept_s == kept_t:
        return None
    width = int((student.get("hidden") or teacher.get("hidden"))["source"])
    kept_t = kept_t if kept_t is not None else list(range(width))
    kept_s = kept_s if kept_s is not None else list(range(width))
    position = {d: i for i, d in enumerate(kept_t)}
    missing = [d for d in kept_s if d not in position]
    if missing:
        raise PruneError(f"the student keeps hidden dimensions {missing[:3]} that the teacher does not have")
    return [position[d] for d in kept_s]


def summary(structure: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(source layer, heads kept, FFN width) per kept layer."""
    return [(e["source"], len(e["heads"]), e["intermediate"]) for e in structure["layers"]]


def validate(structure: Any, model: nn.Module) -> None:
    """A ModelError naming what is wrong when a saved `compressor_structure` cannot describe this model."""

    def bad(what: str) -> ModelError:
        return ModelError(f"config.json: `compressor_structure` {what}; re-save the model")

    if (
        not isinstance(structure, dict)
        or structure.get("version") != VERSION
        or not isinstance(structure.get("layers"), list)
    ):
        raise bad("is malformed or of an unknown version")
    arch = arch_for(model.config.model_type)
    num_heads, ffn_size = arch.num_heads(model.config), arch.intermediate_size(model.config)
    hidden_size = arch.hidden_size(model.config)
    if structure.get("source_heads") != num_heads or structure.get("source_intermediate") != ffn_size:
        raise bad("does not match the model's head count or FFN size")
    if not structure["layers"]:
        raise bad("keeps no layer")
    for i, entry in enumerate(structure["layers"]):
        heads = entry.get("heads") if isinstance(entry, dict) else None
        width = entry.get("intermediate") if isinstance(entry, dict) else None
        if not (_ids(heads, num_heads) and _count(width, ffn_size)):
            raise bad(f"layer {i} is malformed (heads must be distinct head ids, intermediate a width)")
    vocab = structure.get("vocab")
    if vocab is not None and not (
        isinstance(vocab, dict) and _count(vocab.get("source_size"), 10**9) and _count(vocab.get("kept"), 10**9)
    ):
        raise bad("has a malformed `vocab`")
    hidden = structure.get("hidden")
    if hidden is not None and not (
        isinstance(hidden, dict)
        and hidden.get("source") == hidden_size
        and _ids(hidden.get("kept"), hidden_size)
        and hidden["kept"]
    ):
        raise bad("has a malformed `hidden` (it must list distinct kept dimensions of the source width)")


def _ids(value: Any, limit: int) -> bool:
    return (
        isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < limit for v in value)
        and len(set(value)) == len(value)
    )


def _count(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit
