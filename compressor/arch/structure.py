"""The structure spec of a pruned model: what each kept layer keeps, stored in config.json.

`config.compressor_structure` (version 1):
    {"version": 1, "source_layers": L, "source_heads": H, "source_intermediate": F,
     "layers": [{"source": i, "heads": [kept original head ids], "intermediate": n,
                 "neurons": [kept original neuron ids] | null}],
     "vocab": {"source_size": V, "kept": k} | null}

`load_model` calls `build_shapes_` on a freshly built full-size model so the saved weights fit exactly; we never
use transformers' `pruned_heads` (removed in v5).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from compressor.errors import ModelError

if TYPE_CHECKING:  # torch only for annotations: reading a checkpoint's config needs no training stack
    from torch import nn

VERSION = 1


def ensure_structure(model: nn.Module) -> dict[str, Any]:
    """The model's structure dict, created (unpruned) on first use."""
    config = model.config
    structure = getattr(config, "compressor_structure", None)
    if structure:
        return structure
    structure = {
        "version": VERSION,
        "source_layers": config.num_hidden_layers,
        "source_heads": config.num_attention_heads,
        "source_intermediate": config.intermediate_size,
        "layers": [
            {
                "source": i,
                "heads": list(range(config.num_attention_heads)),
                "intermediate": config.intermediate_size,
                "neurons": None,
            }
            for i in range(config.num_hidden_layers)
        ],
        "vocab": None,
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
        or any(
            len(e["heads"]) != structure["source_heads"] or e["intermediate"] != structure["source_intermediate"]
            for e in structure["layers"]
        )
    )


def summary(structure: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(source layer, heads kept, FFN width) per kept layer."""
    return [(e["source"], len(e["heads"]), e["intermediate"]) for e in structure["layers"]]


def validate(structure: Any, model: nn.Module) -> None:
    if not isinstance(structure, dict) or structure.get("version") != VERSION or "layers" not in structure:
        raise ModelError(
            "config.json: `compressor_structure` is malformed or of an unknown version; re-save the model"
        )
    config = model.config
    if structure["source_heads"] != config.num_attention_heads or structure["source_intermediate"] != (
        config.intermediate_size
    ):
        raise ModelError("config.json: `compressor_structure` does not match the model's head count or FFN size")
