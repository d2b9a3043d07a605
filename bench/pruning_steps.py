"""The steps of bench/pruning.py, each run through the cache of bench/stages.py: the unpruned accuracy, sensitivity
plans at a parameter budget, uniform magnitude pruning, retraining-free pruning (plan + reconstruction), exports; then
the measurements on the artifacts that run every time (benchmark, optimum and `compressor predict` loading them)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.stages import StageCache, StageRecord

if TYPE_CHECKING:
    from bench.pruning import PruningBenchConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Bench:
    """What every step shares: the settings, the stage cache, the data and the unpruned model (loaded once)."""

    cfg: PruningBenchConfig
    cache: StageCache
    train: Any  # LabelledData, every training row (steps draw their own seeded samples)
    val: Any  # LabelledData, the validation rows scored
    inputs: dict[str, Any]  # model and data fingerprints: part of every step's config
    _base: tuple[Any, Any] | None = None

    def base(self) -> tuple[Any, Any]:
        """The unpruned model and its tokenizer; steps prune deep copies, never this one."""
        if self._base is None:
            from compressor.checkpoint import load_model

            self._base = load_model(self.cfg.model)
        return self._base

    def fresh(self) -> tuple[Any, Any]:
        model, tokenizer = self.base()
        return copy.deepcopy(model), tokenizer

    def step(self, name: str, config: dict[str, Any], fn: Any) -> StageRecord:
        return self.cache.run(name, self.inputs | {"threads": self.cfg.threads} | config, fn)


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - start, 2)


def _accuracy(model: Any, tokenizer: Any, data: Any, seq_len: int) -> float:
    from compressor.train.loop import evaluate

    return evaluate(model, tokenizer, data, max_length=seq_len)["accuracy"]


def _costs(model: Any, seq_len: int) -> dict[str, int]:
    from compressor.sensitivity.cost import encoder_flops, encoder_params

    return {"encoder_params": encoder_params(model), "encoder_flops": encoder_flops(model, seq_len)}


# --- steps -------------------------------------------------------------------------------------------------------


def unpruned_step(b: Bench) -> StageRecord:
    """Validation accuracy and encoder size of the checkpoint as given."""

    def run(target: Path, resume: bool) -> dict[str, Any]:
        model, tokenizer = b.base()
        accuracy, seconds = _timed(_accuracy, model, tokenizer, b.val, b.cfg.seq_len)
        target.mkdir(parents=True, exist_ok=True)
        return {"accuracy": accuracy, "eval_seconds": seconds, **_costs(model, b.cfg.seq_len)}

    return b.step("unpruned", {"step": "unpruned", "seq_len": b.cfg.seq_len}, run)


def plan_step(b: Bench, scorer: str, budget: str) -> StageRecord:
    """`analyse` (scores, heatmap, plan.json in the step's directory) → `apply_plan_` → accuracy, no recovery."""
    from compressor.prune.units import apply_plan_
    from compressor.sensitivity.analyse import analyse
    from compressor.sensitivity.config import AnalyseConfig

    cfg = b.cfg
    acfg = AnalyseConfig(scorer=scorer, budget=budget, samples=cfg.plan_samples, seq_len=cfg.seq_len, seed=cfg.seed)

    def run(target: Path, resume: bool) -> dict[str, Any]:
        model, tokenizer = b.fresh()
        report = analyse(model, acfg, tokenizer=tokenizer, data=b.train, out_dir=target)
        _, prune_seconds = _timed(apply_plan_, model, report.plan)
        accuracy, eval_seconds = _timed(_accuracy, model, tokenizer, b.val, cfg.seq_len)
        return {
            "scorer": scorer,
            "budget": budget,
            "predicted": report.plan.predicted,
            "layers": report.plan.summary(),
            "accuracy": accuracy,
            "analyse_seconds": round(report.seconds, 2),
            "prune_seconds": prune_seconds,
            "eval_seconds": eval_seconds,
            **_costs(model, cfg.seq_len),
        }

    return b.step(f"plan-{scorer}-{budget.replace('=', '')}", {"step": "plan", **asdict(acfg)}, run)


def uniform_fractions(model: Any, target_params: float, heads_kept: float) -> tuple[float, float]:
    """Per-layer fractions for `prune_by_fraction_`: the heads share nearest `heads_kept`, then the FFN fraction
    whose encoder parameter count is closest to `target_params` (computed, not pruned: the cost model counts)."""
    from compressor.sensitivity.cost import analytic_costs, layer_shapes

    shapes, costs = layer_shapes(model), analytic_costs(model, "params")
    heads = max(s.heads for s in shapes)
    head_fraction = min(heads - 1, round(heads * (1 - heads_kept))) / heads

    def params(ffn_fraction: float) -> float:
        kept = [
            (s.heads - int(s.heads * head_fraction + 1e-9), s.neurons - int(s.neurons * ffn_fraction + 1e-9))
            for s in shapes
        ]
        return costs.base + sum(costs.layer_cost(h, n) for h, n in kept)

    width = max(s.neurons for s in shapes)
    ffn_fraction = min((k / width for k in range(width)), key=lambda f: abs(params(f) - target_params))
    return head_fraction, ffn_fraction


def uniform_step(b: Bench, reference: StageRecord) -> StageRecord:
    """Magnitude pruning with the same fractions in every layer, at the parameter count of `reference`'s plan."""
    from compressor.prune.units import prune_by_fraction_
    from compressor.sensitivity.plan import Plan

    plan = Plan.load(reference.path / "plan.json")
    kept_heads = sum(len(e.heads) for e in plan.layers if not e.dropped) / sum(plan.model["heads"])

    def run(target: Path, resume: bool) -> dict[str, Any]:
        model, tokenizer = b.fresh()
        heads, ffn = uniform_fractions(model, reference.result["encoder_params"], kept_heads)
        _, prune_seconds = _timed(prune_by_fraction_, model, heads, ffn)
        accuracy, eval_seconds = _timed(_accuracy, model, tokenizer, b.val, b.cfg.seq_len)
        target.mkdir(parents=True, exist_ok=True)
        costs = _costs(model, b.cfg.seq_len)
        return {
            "heads": heads,
            "ffn": ffn,
            "accuracy": accuracy,
            "prune_seconds": prune_seconds,
            "eval_seconds": eval_seconds,
            **costs,
        }

    return b.step("uniform-magnitude", {"step": "uniform", "after": reference.token}, run)


def reconstruct_step(b: Bench, plan: StageRecord) -> StageRecord:
    """Retraining-free pruning: the plan's units removed, then `reconstruct_` against the unpruned model; saved."""
    from compressor.checkpoint import save_model
    from compressor.fs import atomic_dir
    from compressor.prune.recover import reconstruct_
    from compressor.prune.units import apply_plan_
    from compressor.sensitivity.plan import Plan

    cfg = b.cfg

    def run(target: Path, resume: bool) -> dict[str, Any]:
        model, tokenizer = b.fresh()
        teacher, _ = b.base()
        _, prune_seconds = _timed(apply_plan_, model, Plan.load(plan.path / "plan.json"))
        report, seconds = _timed(
            reconstruct_,
            model,
            teacher,
            tokenizer,
            b.train,
            samples=cfg.reconstruct_samples,
            max_length=cfg.seq_len,
            seed=cfg.seed,
            quiet=cfg.quiet,
        )
        accuracy, eval_seconds = _timed(_accuracy, model, tokenizer, b.val, cfg.seq_len)
        with atomic_dir(target) as tmp:
            save_model(model, tokenizer, tmp)
        return {
            "accuracy": accuracy,
            "reconstruct_seconds": seconds,
            "prune_seconds": prune_seconds,
            "eval_seconds": eval_seconds,
            "samples": report["samples"],
            "tokens": report["tokens"],
            **_costs(model, cfg.seq_len),
        }

    config = {"step": "reconstruct", "after": plan.token, "samples": cfg.reconstruct_samples, "seed": cfg.seed}
    return b.step(f"reconstruct-{plan.name.removeprefix('plan-')}", config, run)


def export_step(
    b: Bench, pruned: StageRecord, name: str, *, quantize: str, fuse: str, vocab: str | None
) -> StageRecord:
    """`export_onnx` of the pruned checkpoint (gate and accuracy on every scored validation row); with `vocab` (the
    fallback of dropped ids: unk or nearest), the embedding first keeps only the token ids of the training file
    (`prune_vocab_`)."""
    from compressor.checkpoint import load_model
    from compressor.prune.vocab import prune_vocab_, unknown_rate, used_token_ids
    from exporters.onnx.config import ExportConfig
    from exporters.onnx.export import export_onnx

    cfg = b.cfg
    ecfg = ExportConfig(
        quantize=quantize,
        fuse=fuse,
        eval_samples=len(b.val),
        threads=cfg.threads,
        seq_len=cfg.seq_len,
        max_length=cfg.seq_len,
        timing_runs=cfg.timing_runs,
    )

    def run(target: Path, resume: bool) -> dict[str, Any]:
        model, tokenizer = load_model(pruned.path)
        out: dict[str, Any] = {}
        if vocab:
            start = time.perf_counter()
            keep = used_token_ids(tokenizer, b.train.texts, b.train.text_pairs)
            report = prune_vocab_(model, keep, tokenizer.unk_token_id, fallback=vocab)
            out["vocab"] = asdict(report) | {
                "seconds": round(time.perf_counter() - start, 2),
                "validation_unknown_rate": unknown_rate(tokenizer, keep, b.val.texts, b.val.text_pairs),
                "fallback": vocab,
            }
        stages = [{"stage": pruned.name, "config": pruned.config}]
        source = {"checkpoint": str(pruned.path), "model": str(cfg.model)}
        rep, seconds = _timed(
            export_onnx, model, tokenizer, ecfg, out_dir=target, eval_data=b.val, source=source, stages=stages
        )
        return out | {
            "export_seconds": seconds,
            "model_bytes": rep.model_bytes,
            "fusion": rep.manifest["fusion"],
            "quantization": rep.manifest["quantization"],
            "agreement": rep.agreement,
            "excluded_nodes": rep.excluded_nodes,
            "accuracy": rep.accuracy,
            "parity": rep.parity_max_abs_diff,
        }

    config = {"step": "export", "after": pruned.token, "vocab": vocab, "export": asdict(ecfg)}
    return b.step(f"export-{name}", config, run)


# --- measurements on the artifacts (every run) ---------------------------------------------------------------------


def measure(b: Bench, artifacts: dict[str, Path]) -> dict[str, Any]:
    """`compressor.benchmark` of the artifacts, interleaved: accuracy on the validation rows, size, p50 latency."""
    from exporters.measure import BenchmarkConfig, benchmark

    bcfg = BenchmarkConfig(
        threads=b.cfg.threads,
        seq_len=b.cfg.seq_len,
        real_lengths=False,
        runs=b.cfg.runs,
        warmup=max(1, b.cfg.runs // 10),
        seed=b.cfg.seed,
    )
    rep = benchmark(list(artifacts.values()), bcfg, data=b.val)
    results = {
        name: {"accuracy": r.accuracy, "eval_rows": r.eval_rows, "model_bytes": r.model_bytes, "p50_ms": r.fixed.p50}
        for name, r in zip(artifacts, rep.results, strict=True)
    }
    return {"machine": rep.machine, "artifacts": results}


def loader_checks(artifact: Path, texts: list[str], threads: int) -> dict[str, Any]:
    """Run `texts` through optimum's ORTModelForSequenceClassification and through `compressor predict`."""
    optimum, predict = (
        _run_check(_optimum_labels, artifact, texts, threads),
        _run_check(_predict_labels, artifact, texts, threads),
    )
    both = optimum["ok"] and predict["ok"]
    return {
        "sentences": len(texts),
        "optimum": optimum,
        "predict": predict,
        "agree": both and optimum["labels"] == predict["labels"],
    }


def _run_check(fn: Any, artifact: Path, texts: list[str], threads: int) -> dict[str, Any]:
    # Whether the artifact loads is what is measured here, so a failure is a result to report, not a crash.
    start = time.perf_counter()
    try:
        labels = fn(artifact, texts, threads)
    except Exception as err:
        return {"ok": False, "error": f"{type(err).__name__}: {err}"[:500], "seconds": time.perf_counter() - start}
    return {"ok": True, "labels": labels, "seconds": round(time.perf_counter() - start, 2)}


def _optimum_labels(artifact: Path, texts: list[str], threads: int) -> list[str]:
    import onnxruntime
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    model = ORTModelForSequenceClassification.from_pretrained(artifact, session_options=options)
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    logits = model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits
    return [model.config.id2label[int(i)] for i in logits.argmax(-1)]


def _predict_labels(artifact: Path, texts: list[str], threads: int) -> list[str]:
    options = ["--threads", str(threads), "--quiet"]
    # `--` ends the options: a sentence may start with a dash
    command = [sys.executable, "-m", "cli.main", "predict", *options, str(Path(artifact).resolve()), "--", *texts]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"exit {run.returncode}: {run.stderr.strip()[-400:]}")
    return [json.loads(line)["label"] for line in run.stdout.splitlines() if line.strip()]
