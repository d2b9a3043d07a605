"""The pruning benchmark's targets (issues 4, 7, 8, computed from the measured numbers) and its outputs: the
`bench:pruning` section of benchmarks.md, bench-pruning.json and the heatmap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.report import update_section

START = "<!-- bench:pruning:start -->"
END = "<!-- bench:pruning:end -->"
MARKDOWN, JSON_FILE, HEATMAP = "benchmarks.md", "bench-pruning.json", "heatmap.png"
ISSUE_ROWS = 872  # SST-2 validation: the issues' numbers are on every row
EPS = 1e-9  # accuracy differences are multiples of 1/rows: compare thresholds without float noise
# vocabulary-pruned artifact → the int8 artifact of the same model without it (bench/pruning.py's exports)
VOCAB_PAIRS = {"int8-vocab": "int8", "int8-vocab-nearest": "int8", "int8-small-vocab-nearest": "int8-small"}
MODEL_OF = {"int8": "fisher flops=0.6 + reconstruct", "int8-small": "fisher flops=0.4 + reconstruct"}


def _pt(a: float, b: float) -> float:
    """a − b in accuracy points."""
    return 100.0 * (a - b)


def _acc(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _sec(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def _met(flag: bool | None) -> str:
    return "not measured" if flag is None else ("met" if flag else "**not met**")


def _total_seconds(plan: dict[str, Any], rec: dict[str, Any] | None = None) -> float:
    """Wall time of the pruning itself: analyse + prune (+ reconstruct); evaluation excluded."""
    return plan["analyse_seconds"] + plan["prune_seconds"] + (rec["reconstruct_seconds"] if rec else 0.0)


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every "done when" threshold of issues 4, 7 and 8 that this benchmark measures, met or not."""
    out: list[dict[str, Any]] = []

    def add(issue: int, target: str, value: str, met: bool | None) -> None:
        out.append({"issue": issue, "target": target, "value": value, "met": met})

    base = r["unpruned"]["accuracy"]
    plans = r["issue4"]["plans"]
    mag = plans["magnitude"]
    for scorer in ("fisher", "head-gradient"):
        p = plans[scorer]
        add(
            4,
            f"`{scorer}` plan at params=0.6 beats the `magnitude` plan at the same parameter count (no recovery)",
            f"{_acc(p['accuracy'])} vs {_acc(mag['accuracy'])} ({p['encoder_params']:,} vs {mag['encoder_params']:,}"
            " encoder params)",
            p["accuracy"] > mag["accuracy"],
        )
    goal = 0.6 * r["unpruned"]["encoder_params"]
    worst = max(abs(p["encoder_params"] / goal - 1) for p in plans.values())
    add(4, "plans hit the params budget within 1 %", f"worst {100 * worst:.2f} % off", worst <= 0.01)

    free = r["issue7"]["flops=0.7"]
    removed = 1 - free["plan"]["predicted"]["flops"]["fraction"]
    delta = _pt(free["reconstruct"]["accuracy"], base)
    seconds = _total_seconds(free["plan"], free["reconstruct"])
    threads = r["settings"]["threads"]
    add(
        7,
        "retraining-free (fisher + reconstruct) removes ≥ 30 % of encoder FLOPs",
        f"{100 * removed:.1f} %",
        removed >= 0.30 - EPS,
    )
    add(
        7,
        "… within 1.0 pt of the unpruned accuracy",
        f"{delta:+.2f} pt",
        -delta <= 1.0 + EPS,
    )
    add(
        7,
        "… in under 5 minutes on 2 cores",
        f"{_sec(seconds)} at {threads} thread{'s' * (threads != 1)}" + ("" if threads == 2 else " (not 2)"),
        seconds < 300,
    )
    add(
        7,
        "≥ 40 % FLOPs removed, recovered by distillation to within 1.0 pt",
        "distillation is measured by bench/sst2.py (its `bench:sst2` section)",
        None,
    )
    ex, art = r["exports"], r["artifacts"]
    for name, base in VOCAB_PAIRS.items():
        if name not in ex or base not in ex:
            continue
        cut = 1 - ex[name]["model_bytes"] / ex[base]["model_bytes"]
        change = _pt(art[name]["accuracy"], art[base]["accuracy"])
        what = f"{ex[name]['vocab'].get('fallback', 'unk')}, {MODEL_OF[base]}"
        add(
            7,
            f"vocabulary pruning ({what}) cuts the artifact size by ≥ 40 %",
            f"{100 * cut:.1f} %",
            cut >= 0.4 - EPS,
        )
        add(7, "… with ≤ 0.2 pt accuracy change", f"{change:+.2f} pt", abs(change) <= 0.2 + EPS)

    int8 = ex["int8"]
    rows = int8["accuracy"]["samples"] if int8["accuracy"] else r["eval_rows"]
    note = "" if rows == ISSUE_ROWS else f" (of {rows}, not {ISSUE_ROWS})"
    add(
        8,
        "int8 agrees with fp32 on ≥ 99 % of the 872 validation sentences",
        f"{100 * int8['agreement']:.2f} %{note}",
        int8["agreement"] >= 0.99 - EPS,
    )
    loss = _pt(art["fp32"]["accuracy"], art["int8"]["accuracy"])
    measured = f"{loss:.2f} pt lost" if loss >= 0 else f"none lost ({-loss:.2f} pt gained)"
    add(8, "int8 loses ≤ 0.3 pt against fp32", measured, loss <= 0.3 + EPS)
    fusion = int8["fusion"]
    timed = sorted(fusion.get("timings_ms") or {})
    add(
        8,
        "the manifest records fused-vs-plain timings and the choice",
        f"timed: {', '.join(timed)}; choice: {fusion.get('choice')}",
        timed == ["fused", "plain"] and "choice" in fusion,
    )
    ld = r["loaders"]
    add(
        8,
        "the artifact runs in ORTModelForSequenceClassification and `compressor predict`",
        f"optimum {'ok' if ld['optimum']['ok'] else 'failed'}, predict {'ok' if ld['predict']['ok'] else 'failed'}, "
        f"{'same' if ld['agree'] else 'different'} labels on {ld['sentences']} sentences",
        ld["optimum"]["ok"] and ld["predict"]["ok"] and ld["agree"],
    )
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def render_markdown(r: dict[str, Any]) -> str:
    """The `bench:pruning` section, from the result document only."""
    s, m, base = r["settings"], r["machine"], r["unpruned"]
    cached = [name for name, step in r["steps"].items() if step["cached"]]
    lines = [
        START,
        "## Pruning: sensitivity plans, retraining-free recovery, vocabulary, gated int8 (issues 4, 7, 8)",
        "",
        f"Every number in this section comes from one run of `{r['command']}` on {r['date']}: CPU {m['cpu']} "
        f"({m['usable_cores']} usable cores), {s['threads']} thread(s) for PyTorch and ONNX Runtime. "
        f"Checkpoint `{s['model']}`; validation: {r['eval_rows']} rows of `{s['eval_data']}`; training data "
        f"`{s['data']}` ({r['train_rows']:,} rows). Sequence length {s['seq_len']}.",
    ]
    if r["quick"]:
        lines += ["", "**Quick run** (small samples): a development check, not the recorded numbers."]
    if cached:
        lines += [
            "",
            f"{len(cached)} of {len(r['steps'])} steps were reused from the stage cache (`{s['out']}`); "
            "their wall times are from the run that made them: " + ", ".join(f"`{c}`" for c in cached) + ".",
        ]
    lines += ["", "### Targets", ""]
    lines += _table(
        ["issue", "target", "measured", "status"],
        [[str(t["issue"]), t["target"], t["value"], _met(t["met"])] for t in r["targets"]],
    )

    plans, uni = r["issue4"]["plans"], r["issue4"]["uniform"]

    def row4(name: str, x: dict[str, Any], seconds: float) -> list[str]:
        share = x["encoder_params"] / base["encoder_params"]
        return [
            name,
            f"{x['encoder_params']:,}",
            f"{100 * share:.1f} %",
            _acc(x["accuracy"]),
            f"{_pt(x['accuracy'], base['accuracy']):+.2f}",
            _sec(seconds),
        ]

    lines += ["", "### Issue 4: sensitivity plan vs magnitude pruning at params=0.6, no recovery", ""]
    rows = [["unpruned", f"{base['encoder_params']:,}", "100.0 %", _acc(base["accuracy"]), "0.00", "–"]]
    rows += [row4(f"`{k}` plan", p, _total_seconds(p)) for k, p in plans.items()]
    rows.append(
        row4(
            f"magnitude, uniform (heads −{100 * uni['heads']:.0f} %, FFN −{100 * uni['ffn']:.1f} % per layer)",
            uni,
            uni["prune_seconds"],
        )
    )
    lines += _table(
        ["pruning", "encoder params kept", "of unpruned", "accuracy", "Δ vs unpruned (pt)", "wall time"], rows
    )
    lines += [
        "",
        f"Plans score {s['plan_samples']} training rows; wall time is analyse + prune (evaluation "
        "excluded). The uniform row uses `prune_by_fraction_` at the head share of the fisher plan and the FFN "
        "fraction closest to its parameter count.",
        "",
        f"![Sensitivity heatmap (fisher)]({HEATMAP})",
    ]

    lines += [
        "",
        f"### Issue 7: retraining-free pruning (fisher plan + reconstruction on {s['reconstruct_samples']} "
        "training sentences)",
        "",
    ]
    rows = []
    for budget, x in r["issue7"].items():
        plan, rec = x["plan"], x["reconstruct"]
        rows.append(
            [
                budget,
                f"{100 * plan['predicted']['flops']['fraction']:.1f} %",
                f"{100 * rec['encoder_params'] / base['encoder_params']:.1f} %",
                _acc(plan["accuracy"]),
                _acc(rec["accuracy"]),
                f"{_pt(rec['accuracy'], base['accuracy']):+.2f}",
                _sec(plan["analyse_seconds"]),
                _sec(rec["reconstruct_seconds"]),
                _sec(_total_seconds(plan, rec)),
            ]
        )
    lines += _table(
        [
            "budget",
            "FLOPs kept (plan)",
            "params kept",
            "accuracy, no recovery",
            "after reconstruct",
            "Δ vs unpruned (pt)",
            "analyse",
            "reconstruct",
            "total",
        ],
        rows,
    )

    lines += [
        "",
        "Total = analyse + prune + reconstruct (model loading and evaluation excluded). FLOPs are the cost "
        f"model's at sequence length {s['seq_len']} (compressor/sensitivity/cost.py).",
    ]

    ex, art = r["exports"], r["artifacts"]
    v = ex["int8-vocab"]["vocab"]
    lines += ["", "### Issue 7: vocabulary pruning (→ dynamic int8)", ""]
    rows = []
    for base, model in MODEL_OF.items():
        if base not in ex:
            continue
        rows.append([model, "int8", f"{ex[base]['model_bytes'] / 1e6:.2f} MB", "–", _acc(art[base]["accuracy"]), "–"])
        for name in (n for n, b in VOCAB_PAIRS.items() if b == base and n in ex):
            rows.append(
                [
                    model,
                    f"int8 + vocabulary, dropped ids → {ex[name]['vocab'].get('fallback', 'unk')}",
                    f"{ex[name]['model_bytes'] / 1e6:.2f} MB",
                    f"{100 * (ex[name]['model_bytes'] / ex[base]['model_bytes'] - 1):+.1f} %",
                    _acc(art[name]["accuracy"]),
                    f"{_pt(art[name]['accuracy'], art[base]['accuracy']):+.2f}",
                ]
            )
    lines += _table(["model", "artifact", "model.onnx", "size", "accuracy", "Δ (pt)"], rows)
    lines += [
        "",
        f"Token ids kept: {v['kept']:,} of {v['source_size']:,} (those of the training file, plus special "
        f"tokens); validation tokens whose id was dropped: {100 * v['validation_unknown_rate']:.3f} % "
        "(`unk`: they read the [UNK] row; `nearest`: the kept row with the most similar embedding, "
        "`compressor prune --vocab DATA --vocab-fallback nearest`).",
    ]

    int8, ld = ex["int8"], r["loaders"]
    fusion, gate_acc = int8["fusion"], int8["accuracy"] or {}
    by_threads = fusion.get("timings_ms_by_threads") or {
        str(fusion.get("measured_at", {}).get("threads")): fusion.get("timings_ms") or {}
    }
    timings = "; ".join(
        f"{t} thread(s): " + ", ".join(f"{k} {ms:.2f} ms" for k, ms in times.items())
        for t, times in by_threads.items()
    )
    at = fusion.get("measured_at", {})
    lines += [
        "",
        "### Issue 8: export of that pruned model (quantize=dynamic, fuse=auto)",
        "",
        f"- Gate (one sentence per run, unpadded, as on the edge): int8 agrees with fp32 on "
        f"{100 * int8['agreement']:.2f} % of {gate_acc.get('samples', '?')} validation sentences (threshold 99 %); "
        f"nodes kept fp32: {_kept_fp32(int8)}.",
        f"- Accuracy (`compressor benchmark`, {art['fp32']['eval_rows']} rows, one per run): fp32 artifact "
        f"{_acc(art['fp32']['accuracy'])}, int8 {_acc(art['int8']['accuracy'])} "
        f"({_pt(art['int8']['accuracy'], art['fp32']['accuracy']):+.2f} pt); the manifest's gate sample: fp32 "
        f"{_acc(gate_acc.get('fp32'))}, int8 {_acc(gate_acc.get('final'))}.",
        f"- Fusion recorded in the manifest (p50, batch {at.get('batch')}, seq {at.get('seq_len')}): {timings} → "
        f"kept **{fusion.get('choice')}** ({fusion.get('rule', 'the faster p50')}).",
        "- p50 at batch 1, seq "
        + f"{s['seq_len']}: "
        + ", ".join(f"{k} {a['p50_ms']:.2f} ms ({a['model_bytes'] / 1e6:.2f} MB)" for k, a in art.items())
        + ".",
        f"- `ORTModelForSequenceClassification.from_pretrained`: {_loader(ld['optimum'])}; `compressor predict`: "
        f"{_loader(ld['predict'])}; labels {'agree' if ld['agree'] else 'differ'} on {ld['sentences']} "
        "validation sentences.",
    ]

    lines += ["", "### Wall time per step", ""]
    lines += _table(
        ["step", "seconds", "cached"],
        [[f"`{k}`", f"{x['seconds']:.1f}", "yes" if x["cached"] else "no"] for k, x in r["steps"].items()],
    )
    lines += ["", f"This run: {r['seconds']:.0f} s in total.", END]
    return "\n".join(lines) + "\n"


def _loader(check: dict[str, Any]) -> str:
    return f"ran ({_sec(check['seconds'])})" if check["ok"] else f"failed ({check['error']})"


def write_outputs(result: dict[str, Any], docs: Path, *, heatmap: Path) -> dict[str, Path]:
    """benchmarks.md (this section only), bench-pruning.json and heatmap.png in `docs`."""
    docs.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": docs / MARKDOWN, "json": docs / JSON_FILE, "heatmap": docs / HEATMAP}
    shutil.copyfile(heatmap, paths["heatmap"])
    paths["json"].write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    update_section(paths["markdown"], render_markdown(result), markers=(START, END))
    return paths


def summary(result: dict[str, Any]) -> str:
    """A few lines for the terminal: each target and whether it is met."""
    lines = [f"bench/pruning: {result['seconds']:.0f} s; {result['eval_rows']} validation rows"]
    lines += [f"  issue {t['issue']}: {_met(t['met']):>12}  {t['target']}: {t['value']}" for t in result["targets"]]
    return "\n".join(lines)


def _kept_fp32(int8: dict[str, Any]) -> str:
    """The gate's fp32 nodes, each marked by whether its weights are stored int8 (weight-only) or fully fp32."""
    nodes = int8["excluded_nodes"]
    if not nodes:
        return "none"
    int8_weights = set((int8.get("quantization") or {}).get("gate", {}).get("excluded_nodes_int8_weights") or [])
    return ", ".join(f"{n} ({'int8 weights' if n in int8_weights else 'fp32 weights'})" for n in nodes)
