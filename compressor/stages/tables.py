"""Tables several stages and the report share: a model's layers, before and after pruning."""

from __future__ import annotations

from typing import Any

from compressor.arch.table import ARCHS


def structure_table(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[list[str], list[list[str]]] | None:
    """Per source layer: heads and FFN width before and after, from two config.json files."""
    if before is None:
        return None
    kept = {r["source"]: r for r in layer_rows(after)} if after else {}
    rows = []
    for r in layer_rows(before):
        if after is None:
            heads, ffn = "-", "-"
        elif r["source"] not in kept:
            heads, ffn = "dropped", "dropped"
        else:
            heads, ffn = str(kept[r["source"]]["heads"]), str(kept[r["source"]]["intermediate"])
        rows.append([str(r["source"]), str(r["heads"]), heads, str(r["intermediate"]), ffn])
    return ["layer", "heads before", "heads after", "FFN before", "FFN after"], rows


def structure_rows(structure: Any) -> list[dict[str, int]]:
    """Per kept layer of a `compressor_structure` dict: source layer, heads kept, FFN width ([] when malformed)."""
    if not isinstance(structure, dict) or not isinstance(structure.get("layers"), list):
        return []
    return [
        {
            "layer": i,
            "source": int(e.get("source", i)),
            "heads": len(e["heads"]) if isinstance(e.get("heads"), list) else int(e.get("heads") or 0),
            "intermediate": int(e.get("intermediate", 0)),
        }
        for i, e in enumerate(structure["layers"])
        if isinstance(e, dict)
    ]


def layer_rows(config: dict[str, Any] | None) -> list[dict[str, int]]:
    """Per kept layer of a config.json: source layer, heads, FFN width (from `compressor_structure`, or uniform)."""
    if not config:
        return []
    rows = structure_rows(config.get("compressor_structure"))
    if rows:
        return rows
    model_type = config.get("model_type")
    if model_type not in ARCHS:
        return []
    arch = ARCHS.get(model_type)  # DistilBERT's config.json names them n_heads / hidden_dim / n_layers
    heads, ffn = int(config.get(arch.heads_key, 0)), int(config.get(arch.intermediate_key, 0))
    return [
        {"layer": i, "source": i, "heads": heads, "intermediate": ffn}
        for i in range(int(config.get(arch.layers_key, 0)))
    ]
