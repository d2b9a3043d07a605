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
from typing import Any

from torch import nn

from compressor.errors import ModelError, PruneError

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


def _validate(structure: Any, model: nn.Module) -> None:
    if not isinstance(structure, dict) or structure.get("version") != VERSION or "layers" not in structure:
        raise ModelError(
            "config.json: `compressor_structure` is malformed or of an unknown version; re-save the model"
        )
    config = model.config
    if structure["source_heads"] != config.num_attention_heads or structure["source_intermediate"] != (
        config.intermediate_size
    ):
        raise ModelError("config.json: `compressor_structure` does not match the model's head count or FFN size")


def build_shapes_(model: nn.Module, structure: dict[str, Any]) -> None:
    """Shrink a full-size model (weights irrelevant) to `structure`'s shapes, so a saved state dict loads."""
    from compressor.prune.vocab import build_vocab_shape_

    _validate(structure, model)
    model.config.compressor_structure = None
    full_layers = model.config.num_hidden_layers
    if full_layers != len(structure["layers"]):
        # the saved config already has the kept layer count; rebuild against the source count
        raise ModelError("config.json: `num_hidden_layers` disagrees with `compressor_structure`; re-save the model")
    apply_counts_(model, structure)
    model.config.compressor_structure = copy.deepcopy(structure)
    if structure.get("vocab"):
        build_vocab_shape_(model, structure["vocab"])


def apply_counts_(model: nn.Module, structure: dict[str, Any]) -> None:
    """Give each layer the head count and FFN width of `structure` (first units kept; for shape rebuilding)."""
    from compressor.prune.surgery import prune_ffn_, prune_heads_

    for i, entry in enumerate(structure["layers"]):
        prune_heads_(model, i, list(range(len(entry["heads"]))))
        prune_ffn_(model, i, list(range(entry["intermediate"])))


def apply_structure_(model: nn.Module, structure: dict[str, Any]) -> None:
    """Prune an unpruned model to exactly `structure` (original indices), e.g. to re-create a saved run's shapes."""
    from compressor.prune.surgery import drop_layers_, prune_ffn_, prune_heads_

    current = ensure_structure(model)
    if is_pruned(current):
        raise PruneError("apply_structure_ needs an unpruned model")
    if structure["source_layers"] != current["source_layers"] or structure["source_heads"] != current["source_heads"]:
        raise PruneError(
            f"structure is for a model with {structure['source_layers']} layers × {structure['source_heads']} heads; "
            f"this model has {current['source_layers']} × {current['source_heads']}"
        )
    for entry in structure["layers"]:
        i = entry["source"]
        prune_heads_(model, i, entry["heads"])
        neurons = entry.get("neurons")
        prune_ffn_(model, i, neurons if neurons is not None else list(range(entry["intermediate"])))
    drop_layers_(model, [e["source"] for e in structure["layers"]])
