"""The stages of the SST-2 benchmark, each run through the cache of bench/stages.py: the data sample, fine-tuning,
merge, optimum's baseline, the sensitivity plan, pruning with recovery, and our export."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.baseline import export_optimum_fp32, optimum_preset, quantize_optimum
from bench.config import POINTS, BenchConfig
from bench.stages import StageCache, StageRecord

logger = logging.getLogger(__name__)


@dataclass
class Data:
    """The fixed training sample (in memory and as a file for `prune_checkpoint`) and the validation rows."""

    train: Any  # LabelledData
    train_path: Path
    val: Any  # LabelledData
    val_path: Path
    train_hash: str  # of the training sample's content
    val_hash: str  # of the validation rows' content
    train_rows: int  # rows in the training file the sample is drawn from


# --- data --------------------------------------------------------------------------------------------------------


def prepare_data(cfg: BenchConfig) -> Data:
    """Draw the training sample once (seeded) and write it, with the validation rows, under `--out/data`."""
    from compressor.data import load_data

    full = load_data(cfg.train_file)
    train = full.sample(cfg.train_samples, seed=cfg.seed)
    val = load_data(cfg.eval_file, id2label=train.id2label).head(cfg.eval_rows)
    names = _label_names(cfg.model, train.id2label)
    data_dir = Path(cfg.out) / "data"
    train_path = _write_rows(train, names, data_dir / f"train-{len(train)}-seed{cfg.seed}.jsonl")
    val_path = _write_rows(val, names, data_dir / f"validation-{len(val)}.jsonl")
    logger.info("training sample: %d of %d rows; validation: %d rows", len(train), len(full), len(val))
    return Data(train, train_path, val, val_path, _file_hash(train_path), _file_hash(val_path), len(full))


def _label_names(model_ref: str, id2label: dict[int, str]) -> dict[int, str]:
    """The label names the files should carry: the data's own, unless the checkpoint already has a classifier with
    named labels and the data's labels are its integer ids (SST-2's 0/1), then the checkpoint's names; the files
    are read back against the model's label map (`prune_checkpoint`)."""
    from compressor.checkpoint import read_config, resolve_model_path

    raw = read_config(resolve_model_path(model_ref))
    has_head = any(a.endswith("ForSequenceClassification") for a in raw.get("architectures") or [])
    model_names = {int(k): str(v) for k, v in (raw.get("id2label") or {}).items()}
    if not has_head or set(id2label.values()) <= set(model_names.values()):
        return id2label
    if all(str(v).isdigit() and int(v) in model_names for v in id2label.values()):
        return {i: model_names[int(v)] for i, v in id2label.items()}
    return id2label


def _write_rows(data: Any, names: dict[int, str], path: Path) -> Path:
    """Write `sentence`/`label` JSON lines (labels by name); rewritten only when the content changes."""
    import json

    text = "".join(
        json.dumps({"sentence": t, "label": names[y]}, ensure_ascii=False) + "\n"
        for t, y in zip(data.texts, data.labels, strict=True)
    )
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


def _file_hash(path: Path) -> str:
    from compressor.fs import file_sha256

    return file_sha256(path)[:16]


# --- stages ------------------------------------------------------------------------------------------------------


def finetune_stage(cfg: BenchConfig, cache: StageCache, data: Data, method: str) -> StageRecord:
    """Fine-tune `cfg.model` with `method` (its default config) on the training sample."""
    from compressor.checkpoint import model_fingerprint, resolve_model_path
    from compressor.finetune import finetune
    from compressor.methods import METHODS
    from compressor.schema import config_to_dict
    from compressor.train.config import TrainConfig

    registered = METHODS.get(method)
    method_cfg = registered.config_cls()
    train_cfg = TrainConfig(
        epochs=cfg.epochs,
        lr=cfg.lr,  # None: the method's default (recorded in the result; after changing a default, --rerun ft-METHOD)
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        save_steps=cfg.save_steps,
        max_length=cfg.seq_len,
    )
    config = {
        "stage": "finetune",
        "model": cfg.model,
        "weights": model_fingerprint(resolve_model_path(cfg.model)),
        "method": method,
        "method_config": config_to_dict(method_cfg),
        "train": config_to_dict(train_cfg),
        "data": data.train_hash,
    }

    def run(target: Path, resume: bool) -> dict[str, Any]:
        rep = finetune(
            cfg.model,
            method,
            method_cfg,
            train_cfg,
            data=data.train,
            eval_data=None,
            out_dir=target,
            resume=resume,
            force=True,
            quiet=cfg.quiet,
        )
        lr = cfg.lr or registered.default_lr
        return {"metrics": rep.metrics, "trainable": rep.trainable, "total": rep.total, "lr": lr}

    return cache.run(f"ft-{method}", config, run)


def merge_stage(cache: StageCache, data: Data, ft: StageRecord, method: str) -> StageRecord:
    """Fold the adapter into the base weights (a plain checkpoint); score it in PyTorch on the validation rows."""
    from compressor.checkpoint import load_model
    from compressor.merge import merge_run
    from compressor.train.loop import evaluate

    def run(target: Path, resume: bool) -> dict[str, Any]:
        rep = merge_run(ft.path, target, force=True)
        model, tokenizer = load_model(target)
        accuracy = evaluate(model, tokenizer, data.val)["accuracy"]
        return {"max_abs_diff": rep.max_abs_diff, "parameters": rep.parameters, "eval_accuracy": accuracy}

    return cache.run(f"merge-{method}", {"stage": "merge", "after": ft.token, "val": data.val_hash}, run)


def optimum_stages(cfg: BenchConfig, cache: StageCache, merged: StageRecord) -> tuple[StageRecord, StageRecord]:
    """The baseline: optimum's ONNX export (fp32) of the merged full fine-tune, and optimum's dynamic int8 of it."""
    preset = optimum_preset()

    def fp32(target: Path, resume: bool) -> dict[str, Any]:
        return export_optimum_fp32(merged.path, target, max_length=cfg.seq_len)

    fp32_rec = cache.run(
        "optimum-fp32", {"stage": "optimum-export", "after": merged.token, "max_length": cfg.seq_len}, fp32
    )

    def int8(target: Path, resume: bool) -> dict[str, Any]:
        return quantize_optimum(fp32_rec.path, target, preset)

    int8_rec = cache.run(
        "optimum-int8", {"stage": "optimum-quantize", "after": fp32_rec.token, "preset": preset}, int8
    )
    return fp32_rec, int8_rec


def plan_stage(
    cfg: BenchConfig, cache: StageCache, data: Data, merged: StageRecord, method: str, point: str
) -> StageRecord | None:
    """A sensitivity plan at the FLOPs the point's fractions would leave (None with `structure=uniform`)."""
    if cfg.structure != "plan":
        return None
    from compressor.checkpoint import load_model
    from compressor.sensitivity.analyse import analyse
    from compressor.sensitivity.config import AnalyseConfig

    heads, ffn = POINTS[point]
    config = {
        "stage": "analyse",
        "after": merged.token,
        "data": data.train_hash,
        "scorer": cfg.scorer,
        "samples": cfg.plan_samples,
        "seq_len": cfg.seq_len,
        "heads": heads,
        "ffn": ffn,
        "seed": cfg.seed,
    }

    def run(target: Path, resume: bool) -> dict[str, Any]:
        model, tokenizer = load_model(merged.path)
        kept = flops_fraction(model, heads, ffn, seq_len=cfg.seq_len)
        acfg = AnalyseConfig(
            scorer=cfg.scorer, budget=f"flops={kept:.6f}", samples=cfg.plan_samples, seq_len=cfg.seq_len, seed=cfg.seed
        )
        rep = analyse(model, acfg, tokenizer=tokenizer, data=data.train, out_dir=target)
        return {
            "budget": acfg.budget,
            "flops_kept": kept,
            "layers": rep.plan.summary() if rep.plan else None,
            "predicted": rep.plan.predicted if rep.plan else None,
        }

    return cache.run(f"plan-{method}-{point}", config, run)


def flops_fraction(model: Any, heads: float, ffn: float, *, seq_len: int) -> float:
    """Encoder FLOPs (at `seq_len`) of the unpruned architecture with `heads`/`ffn` fractions removed in every
    layer, as a fraction of `model`'s current FLOPs (capped at 1: a model already smaller is not grown)."""
    from compressor.arch.structure import ensure_structure
    from compressor.sensitivity.cost import analytic_costs, encoder_flops

    structure = ensure_structure(model)
    h0, f0 = int(structure["source_heads"]), int(structure["source_intermediate"])
    costs = analytic_costs(model, "flops", seq_len=seq_len)
    keep_h = h0 - math.floor(h0 * heads + 1e-9)
    keep_f = f0 - math.floor(f0 * ffn + 1e-9)
    target = costs.base + int(structure["source_layers"]) * costs.layer_cost(keep_h, keep_f)
    return min(1.0, target / encoder_flops(model, seq_len=seq_len))


def prune_stage(
    cfg: BenchConfig,
    cache: StageCache,
    data: Data,
    merged: StageRecord,
    plan: StageRecord | None,
    method: str,
    point: str,
) -> StageRecord:
    """Prune the merged model to the point (plan or uniform fractions), recover by distillation from it, and prune
    the vocabulary to the training file's tokens."""
    from compressor.checkpoint import load_model
    from compressor.prune.config import PruneConfig
    from compressor.prune.io import prune_checkpoint

    heads, ffn = POINTS[point]
    base = {
        "recover": cfg.recovery,
        "recover_steps": cfg.recover_steps,
        "lr": cfg.recover_lr,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
    }
    vocab = cfg.train_file if cfg.vocab == "train" else None
    config = {
        "stage": "prune",
        "after": [merged.token, plan.token if plan else None],
        "data": data.train_hash,
        "structure": cfg.structure,
        "heads": heads,
        "ffn": ffn,
        "vocab": str(vocab),
        **base,
    }

    def run(target: Path, resume: bool) -> dict[str, Any]:
        if plan is not None:
            prune_cfg = PruneConfig(plan=str(plan.path / "plan.json"), **base)
        else:  # fractions relative to what is left (Pruning-Adapter has already removed heads)
            model, _ = load_model(merged.path)
            prune_cfg = PruneConfig(**relative_fractions(model, heads, ffn), **base)
            del model
        out = prune_checkpoint(
            str(merged.path), target, prune_cfg, data=data.train_path, vocab=vocab, force=True, quiet=cfg.quiet
        )
        recovery = out.get("recovery", {}).get("distill", {})
        return {"report": out, "recover_seconds": recovery.get("train_seconds", 0.0)}

    return cache.run(f"prune-{method}-{point}", config, run)


def relative_fractions(model: Any, heads: float, ffn: float) -> dict[str, float]:
    """Per-layer fractions that bring `model` to the unpruned shape minus `heads`/`ffn` (on average)."""
    from compressor.arch.structure import ensure_structure

    s = ensure_structure(model)
    layers = s["layers"]
    want_h = len(layers) * (s["source_heads"] - math.floor(s["source_heads"] * heads + 1e-9))
    want_f = len(layers) * (s["source_intermediate"] - math.floor(s["source_intermediate"] * ffn + 1e-9))
    have_h = sum(len(e["heads"]) for e in layers)
    have_f = sum(int(e["intermediate"]) for e in layers)
    return {"heads": max(0.0, 1 - want_h / max(have_h, 1)), "ffn": min(0.99, max(0.0, 1 - want_f / max(have_f, 1)))}


def export_stage(
    cfg: BenchConfig, cache: StageCache, data: Data, pruned: StageRecord, name: str, history: list[StageRecord]
) -> StageRecord:
    """Our export: parity-checked ONNX, fusion by measurement, accuracy-gated dynamic int8."""
    from compressor.checkpoint import load_model
    from compressor.train.loop import evaluate
    from exporters.onnx.config import ExportConfig
    from exporters.onnx.export import export_onnx

    ecfg = ExportConfig(
        quantize="dynamic",
        fuse=cfg.fuse,
        threads=cfg.target_threads,
        seq_len=cfg.seq_len,
        max_length=cfg.seq_len,
        eval_samples=cfg.export_eval_samples,
        timing_runs=cfg.timing_runs,
    )
    config = {"stage": "export", "after": pruned.token, "val": data.val_hash, "config": asdict(ecfg)}

    def run(target: Path, resume: bool) -> dict[str, Any]:
        model, tokenizer = load_model(pruned.path)
        pruned_accuracy = evaluate(model, tokenizer, data.val)["accuracy"]  # PyTorch fp32, before export
        stages = [{"stage": r.name, "config": r.config} for r in history]
        rep = export_onnx(
            model,
            ecfg,
            tokenizer=tokenizer,
            out_dir=target,
            eval_data=data.val,
            source={"model": cfg.model, "checkpoint": str(pruned.path)},
            stages=stages,
        )
        return {
            "pruned_fp32_accuracy": pruned_accuracy,
            "model_bytes": rep.model_bytes,
            "fusion": rep.fusion_choice,
            "timings_ms": rep.timings_ms,
            "agreement": rep.agreement,
            "excluded_nodes": rep.excluded_nodes,
            "accuracy": rep.accuracy,
            "parity": rep.parity_max_abs_diff,
        }

    return cache.run(f"export-{name}", config, run)
