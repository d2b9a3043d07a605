"""The `benchmark` stage: every artifact exported before it, side by side in one process, interleaved: latency,
throughput, size and accuracy, ratios against the first one; benchmark.json and an accuracy-vs-latency PNG."""

from __future__ import annotations

from typing import Any

from compressor.fs import atomic_dir
from compressor.schema import config_to_dict
from compressor.stages.base import Context, StageBase, StageView, score_text
from exporters.measure import BenchmarkConfig, benchmark, plot
from exporters.runtime import artifact_task

BENCHMARK_JSON = "benchmark.json"
PLOT_FILE = "accuracy_latency.png"


class BenchmarkStage(StageBase):
    key = "benchmark"
    config_cls = BenchmarkConfig
    output = "benchmark"
    gives = None
    example = "- benchmark: {threads: 1, batch: 1, seq_len: 128, runs: 200}"

    def needs(self, config: BenchmarkConfig) -> tuple[str, ...]:
        return ("artifact",)

    def data(self, config: BenchmarkConfig) -> dict[str, bool]:
        return {"eval": config.real_lengths}

    def run(self, ctx: Context, config: BenchmarkConfig) -> dict[str, Any]:
        names = list(ctx.artifacts)
        data = ctx.data.eval(task=artifact_task(ctx.artifacts[names[0]]) if names else None)
        report = benchmark([ctx.artifacts[n] for n in names], config, data=data, names=names)
        with atomic_dir(ctx.out) as tmp:
            report.write_json(tmp / BENCHMARK_JSON)
            if data is not None:
                plot(report, tmp / PLOT_FILE)
        return {
            "rows": [result_row(r) for r in report.results],
            "machine": report.machine,
            "config": config_to_dict(config)["fields"],
        }

    def row(self, summary: dict[str, Any]) -> dict[str, str]:
        rows = summary.get("rows") or []
        last = rows[-1] if rows else {}
        note = f"{last.get('name')}: {last.get('speedup_p50', 0):.2f}× faster than {rows[0]['name']}" if rows else ""
        return {"params": "-", "accuracy": score_text(last), "note": note}

    def describe(self, summary: dict[str, Any]) -> str:
        return self.row(summary)["note"]

    def sections(self, view: StageView) -> list[tuple[str, list[Any]]]:
        if not view.done:
            return []
        headers, rows = result_table(view.summary)
        plot = view.out / PLOT_FILE
        result: list[Any] = [("table", (headers, rows)), ("p", caption(view.summary))]
        out = [("Result", result)]
        if plot.is_file():
            out.append(("Accuracy vs latency", [("img", (plot, "accuracy vs latency"))]))
        return out


def result_row(result: Any) -> dict[str, Any]:
    """One benchmark result, flattened for the report and the run's records."""
    return {
        "name": result.name,
        "path": result.path,
        "accuracy": result.accuracy,
        "eval_rows": result.eval_rows,
        "metric": result.metric,
        "score": result.score,
        "regression": result.regression,
        "score_delta": result.score_delta,
        "p50_ms": result.fixed.p50,
        "p90_ms": result.fixed.p90,
        "p99_ms": result.fixed.p99,
        "throughput": result.fixed.throughput,
        "model_bytes": result.model_bytes,
        "speedup_p50": result.speedup_p50,
        "size_ratio": result.size_ratio,
        "accuracy_delta": result.accuracy_delta,
    }


def result_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """artifact | accuracy (regression: pearson) | p50 | p90 | MB | speed-up | smaller, one row per artifact."""
    rows = summary.get("rows") or []
    metric = (rows[0].get("metric") if rows else None) or "accuracy"
    headers = [
        "artifact",
        *(["accuracy"] if metric == "accuracy" else ["pearson", "spearman", "mse"]),
        "p50 ms",
        "p90 ms",
        "MB",
        "speed-up",
        "smaller",
    ]
    out = []
    for r in rows:
        if metric != "accuracy":
            reg = r.get("regression") or {}
            quality = [f"{reg[k]:.4f}" if reg.get(k) is not None else "-" for k in ("pearson", "spearman", "mse")]
        else:
            acc = "-" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f}%"
            if r.get("accuracy_delta") is not None and r is not rows[0]:
                acc += f" ({r['accuracy_delta']:+.2f})"
            quality = [acc]
        out.append(
            [
                r["name"],
                *quality,
                f"{r['p50_ms']:.2f}",
                f"{r['p90_ms']:.2f}",
                f"{r['model_bytes'] / 1e6:.2f}",
                f"{r['speedup_p50']:.2f}x",
                f"{r['size_ratio']:.2f}x",
            ]
        )
    return headers, out


def caption(summary: dict[str, Any]) -> str:
    cfg = summary.get("config") or {}
    rows = summary.get("rows") or [{}]
    text = (
        f"Latency: p50 of {cfg.get('runs')} interleaved runs at batch {cfg.get('batch')}, sequence length "
        f"{cfg.get('seq_len')}, {cfg.get('threads')} thread(s)"
    )
    if rows[0].get("eval_rows"):
        what = "accuracy" if (rows[0].get("metric") or "accuracy") == "accuracy" else "Pearson, Spearman and MSE"
        text += f"; {what} on {rows[0]['eval_rows']} validation rows, one sentence per run"
    return text + "; ratios against the first row."
