"""What a person reads before committing to a plan: sensitivity.json, a heatmap PNG and a terminal table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from compressor.sensitivity.cost import LayerShape
from compressor.sensitivity.plan import Plan
from compressor.sensitivity.scorers import Scores

SCHEMA = 1


def _round(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else float(f"{x:.6g}")


def sensitivity_dict(
    scores: Scores,
    shapes: list[LayerShape],
    plan: Plan | None,
    *,
    config: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of sensitivity.json: per-layer head and neuron scores, tensor ranking, plan summary."""
    layers = []
    for shape, h, n in zip(shapes, scores.heads, scores.neurons, strict=True):
        entry = plan.layers[shape.index] if plan is not None else None
        layers.append(
            {
                "index": shape.index,
                "source": shape.source,
                "heads": {
                    "ids": list(shape.head_ids),
                    "scores": [_round(v) for v in h.tolist()],
                    "kept": None if entry is None else ([] if entry.dropped else entry.heads),
                },
                "neurons": {
                    "count": shape.neurons,
                    "scores": [_round(v) for v in n.tolist()],
                    "kept": None if entry is None else (0 if entry.dropped else len(entry.neurons)),
                },
                "dropped": bool(entry.dropped) if entry is not None else False,
            }
        )
    ranking = sorted(scores.tensors.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "kind": "compressor-sensitivity",
        "schema": SCHEMA,
        "scorer": scores.scorer,
        "joint_scale": scores.joint_scale,
        "loss": None if scores.loss is None else _round(scores.loss),
        "config": config,
        "model": model,
        "layers": layers,
        "tensors": [
            {"name": name, "score": _round(value), "rank": rank + 1} for rank, (name, value) in enumerate(ranking)
        ],
        "plan": None
        if plan is None
        else {
            "budget": plan.budget,
            "predicted": plan.predicted,
            "dropped_layers": plan.dropped_layers,
            "layers": plan.summary(),
        },
    }


def save_heatmap(path: Path, scores: Scores, shapes: list[LayerShape], plan: Plan | None, *, num_heads: int) -> Path:
    """Heads importance (layers × original head ids; x = removed by the plan) and per-layer FFN keep ratio."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_layers = len(shapes)
    grid = np.full((n_layers, num_heads), np.nan)
    for shape, h in zip(shapes, scores.heads, strict=True):
        for head_id, value in zip(shape.head_ids, h.tolist(), strict=True):
            grid[shape.index, head_id] = value
    fig = Figure(figsize=(3.5 + 0.45 * num_heads + 3.5, 1.4 + 0.45 * max(n_layers, 2)), layout="constrained")
    FigureCanvasAgg(fig)
    ax_heads, ax_ffn = fig.subplots(1, 2, gridspec_kw={"width_ratios": [max(num_heads, 1), 4]})
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")  # grey: heads already removed
    image = ax_heads.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, interpolation="nearest")
    fig.colorbar(image, ax=ax_heads, fraction=0.046, pad=0.02, label="importance")
    labels = [f"{s.index} (src {s.source})" if s.index != s.source else str(s.index) for s in shapes]
    ax_heads.set_yticks(range(n_layers), labels)
    ax_heads.set_xticks(range(num_heads))
    ax_heads.set_xlabel("head (original id)")
    ax_heads.set_ylabel("layer")
    ax_heads.set_title("Head importance" + (" (x = removed by plan)" if plan is not None else ""))
    ratios, colours, removed = [], [], []
    for shape, n in zip(shapes, scores.neurons, strict=True):
        if plan is not None:
            entry = plan.layers[shape.index]
            removed += [
                (head_id, shape.index)
                for local, head_id in enumerate(shape.head_ids)
                if entry.dropped or local not in entry.heads
            ]
            kept = 0 if entry.dropped else len(entry.neurons)
            ratios.append(kept / shape.neurons if shape.neurons else 0.0)
            colours.append("#bbbbbb" if entry.dropped else "#4c72b0")
        else:
            ratios.append(float(n.mean()) if len(n) else 0.0)
            colours.append("#4c72b0")
    if removed:
        xs, ys = zip(*removed, strict=True)
        ax_heads.scatter(xs, ys, marker="x", color="red", s=40, linewidths=1.5)
    ax_ffn.barh(range(n_layers), ratios, color=colours)
    ax_ffn.set_ylim(n_layers - 0.5, -0.5)  # same top-down order as the heatmap
    ax_ffn.set_yticks(range(n_layers), [""] * n_layers)
    if plan is not None:
        ax_ffn.set_xlim(0, 1)
        ax_ffn.set_title("FFN neurons kept")
        ax_ffn.set_xlabel("fraction of the layer's FFN width")
        for i, (r, shape) in enumerate(zip(ratios, shapes, strict=True)):
            text = f"{r:.0%}" if shape.neurons else "no FFN"
            ax_ffn.text(min(r, 0.85) + 0.02, i, text, va="center", fontsize=8)
    else:
        ax_ffn.set_title("Mean FFN-neuron importance")
    budget = f" — plan {plan.budget.get('spec')}" if plan is not None else ""
    fig.suptitle(f"compressor analyse: {scores.scorer}{budget}")
    fig.savefig(path, dpi=110)
    return path


def table_rows(scores: Scores, shapes: list[LayerShape], plan: Plan | None) -> dict[str, Any]:
    """The per-layer table a person reads before committing to a plan: title, headers, rows, caption (JSON-able).

    Per layer: heads and FFN neurons kept, the three least important heads (original ids), mean scores.
    """
    title = f"Sensitivity ({scores.scorer})" + (f", plan {plan.budget.get('spec')}" if plan is not None else "")
    headers = ["layer", "heads kept", "least important heads", "FFN kept", "head score", "neuron score"]
    rows = []
    for shape, h, n in zip(shapes, scores.heads, scores.neurons, strict=True):
        entry = plan.layers[shape.index] if plan is not None else None
        layer = f"{shape.index}" + (f" (src {shape.source})" if shape.source != shape.index else "")
        order = sorted(range(len(h)), key=lambda j: (float(h[j]), j))[:3]
        least = ", ".join(f"{shape.head_ids[j]}" for j in order) or "-"
        if entry is None:
            heads_kept, ffn_kept = f"{shape.heads}", f"{shape.neurons}"
        elif entry.dropped:
            heads_kept, ffn_kept = "dropped", "dropped"
        else:
            heads_kept = f"{len(entry.heads)}/{shape.heads}"
            share = len(entry.neurons) / shape.neurons if shape.neurons else 0.0
            ffn_kept = f"{len(entry.neurons)}/{shape.neurons} ({share:.0%})"
        rows.append(
            [
                layer,
                heads_kept,
                least,
                ffn_kept,
                f"{float(h.mean()):.3g}" if len(h) else "-",
                f"{float(n.mean()):.3g}" if len(n) else "-",
            ]
        )
    caption = ""
    if plan is not None:
        p, f = plan.predicted["params"], plan.predicted["flops"]
        caption = (
            f"encoder params {p['after']:,}/{p['before']:,} ({p['fraction']:.1%}), "
            f"FLOPs@{f['seq_len']} {f['fraction']:.1%}"
        )
        if plan.predicted.get("latency_ms"):
            lat = plan.predicted["latency_ms"]
            caption += f", latency {lat['after']:.2f}/{lat['before']:.2f} ms"
        if plan.dropped_layers:
            caption += f", dropped layers {plan.dropped_layers}"
        if plan.hidden is not None:
            caption += f", hidden {len(plan.hidden)}/{plan.model['hidden_size']}"
    return {"title": title, "headers": headers, "rows": rows, "caption": caption}
