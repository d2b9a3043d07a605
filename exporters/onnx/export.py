"""`export_onnx`: in-memory model → checked, fused-or-not, gated int8 ONNX artifact directory.

The steps, in order: torch.onnx export (TorchScript exporter, dynamic batch and sequence) → fp32 parity with
PyTorch → candidate graphs (plain and/or ORT-fused, fused-op counts checked) → int8 of each candidate behind the
accuracy gate → timing at 1 thread and --threads (fused kept only if clearly faster at both) → sparse storage →
artifact written atomically with its manifest.
"""

from __future__ import annotations

import copy
import logging
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnx
import torch

from compressor.arch.parts import count_parameters, eval_mode, export_forms, max_tokens
from compressor.arch.structure import ensure_structure
from compressor.errors import ConfigError, ExportError, ModelError, ParityError
from compressor.fs import atomic_dir, check_out_dir
from compressor.schema import config_to_dict
from compressor.task import REGRESSION, config_task
from exporters.manifest import MODEL_NAME, write_manifest
from exporters.onnx import optimize, sessions, shapes, sparse, validate
from exporters.onnx.config import ExportConfig, ExportReport
from exporters.onnx.cpu import TARGETS, host_cpu, resolve_reduce_range
from exporters.onnx.int4 import decoded_bytes
from exporters.onnx.quantize import GateResult, QuantSettings, quantize_with_gate
from exporters.onnx.specs import EXPORT_SPECS, ExportSpec

logger = logging.getLogger(__name__)

DISK_MARGIN = 64 << 20
# A fused graph must beat the plain one by this much (p50) to be kept: smaller gaps are within the timing noise of a
# shared host, and the plain graph is the portable one (standard ONNX ops only).
FUSED_MIN_GAIN = 0.03
UNFUSED = "+sum-norms"  # suffix of a candidate whose residual norms ORT cannot fuse (see _unfused_norms)


def spec_for(model: torch.nn.Module) -> ExportSpec:
    """The model's export spec, with the inputs this model reads (no token_type_ids where it takes none)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in EXPORT_SPECS:
        raise ModelError(f"no ONNX export spec for model type `{model_type}`; supported: {', '.join(EXPORT_SPECS)}")
    return EXPORT_SPECS.get(model_type).for_config(model.config)


def trace_feed(tokenizer: Any, spec: ExportSpec) -> sessions.Feed:
    """Two real sentences of different lengths (a padded batch): what the exporter traces the model with."""
    texts = ["a short one", "a longer sentence, so that the batch has padding"]
    return sessions.encode(tokenizer, texts, None, spec.inputs, max_length=32)


def torch_to_onnx(model: torch.nn.Module, feed: sessions.Feed, spec: ExportSpec, path: Path, *, opset: int) -> None:
    """Trace the in-memory model (pruned shapes included, coded vocabularies in their export form) on `feed` to
    `path`, dynamic batch and sequence axes."""
    device = next(model.parameters()).device
    kwargs = {name: torch.from_numpy(feed[name]).to(device) for name in spec.inputs}
    with warnings.catch_warnings(), torch.no_grad(), export_forms(model):
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, not gone
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(
                model,
                (),
                str(path),
                kwargs=kwargs,
                input_names=list(spec.inputs),
                output_names=list(spec.outputs),
                dynamic_axes=spec.dynamic_axes(),
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except (RuntimeError, TypeError, torch.onnx.errors.OnnxExporterError) as err:
            raise ExportError(f"torch.onnx export failed: {str(err).splitlines()[0][:300]}") from None
    traced = onnx.load(str(path), load_external_data=False)
    external = any(i.data_location == onnx.TensorProto.EXTERNAL for i in traced.graph.initializer)
    if not external and shapes.fold_reshape_targets_(traced):  # exact: constant targets for shape arithmetic
        onnx.save(traced, str(path))
    graph = traced.graph
    outputs = tuple(o.name for o in graph.output)
    if outputs != spec.outputs:
        raise ExportError(f"exported graph has outputs {outputs}; the {spec.model_type} spec expects {spec.outputs}")
    logger.info("exported %s to ONNX (opset %d)", type(model).__name__, opset)


def export_onnx(
    model: torch.nn.Module,
    config: ExportConfig,
    *,
    tokenizer: Any,
    out_dir: Path,
    eval_data: Any | None = None,
    calibration_texts: list[str] | None = None,
    source: dict[str, Any] | None = None,
    stages: list[dict[str, Any]] | None = None,
) -> ExportReport:
    """Export `model` to an ONNX artifact directory: parity-checked, fusion by measurement, gated int8.

    Args:
        out_dir: the artifact directory; written beside it and renamed into place, replacing an existing one only
            on success (the CLI asks for --force first).
        eval_data: LabelledData; its texts (a sample of `config.eval_samples`) drive parity and the int8 gate,
            and its labels give the accuracy in the manifest (for a regression model: pearson, spearman, mse).
        calibration_texts: text for static int8 calibration (also the gate's sample when there is no eval data).
        source: what the model came from (path, hash), recorded in the manifest.
        stages: earlier stages' records (name and config) to carry into the manifest.
    """
    spec = spec_for(model)
    if config.fuse == "on" and not spec.fusion:
        raise ConfigError(
            f"ONNX Runtime has no transformer fusion for {spec.model_type}; export with --fuse auto or --fuse off"
        )
    opset = config.opset or spec.opset
    atol = config.parity_atol or spec.atol
    _check_lengths(model, config)
    out_dir = Path(out_dir)
    check_out_dir(out_dir, force=True)
    _check_disk_space(model, out_dir)
    structure = _structure(model)
    sample = validate.eval_sample(eval_data, calibration_texts, config.eval_samples, model.config.id2label)
    if eval_data is not None and sample.regression != (config_task(model.config.to_dict()) == REGRESSION):
        kind = "regression scores" if sample.regression else "class labels"
        raise ConfigError(
            f"evaluation data `{sample.source}` has {kind} but the model is a {config_task(model.config.to_dict())} "
            "model; pass evaluation data of the model's task"
        )
    if config.quantize == "static" and not calibration_texts and eval_data is None:
        logger.warning("static int8 without calibration data: calibrating on %d built-in sentences", len(sample))
    settings = None
    if config.quantize != "none":
        reduce_range, why = resolve_reduce_range(config.reduce_range, config.optimize_for)
        settings = QuantSettings(
            config.quantize,
            bool(config.per_channel),
            reduce_range,
            config.embedding_bits,
            embedding_decode=config.embedding_decode,
        )
        per_channel = "auto" if config.per_channel is None else config.per_channel
        logger.info("int8 %s: per_channel=%s, reduce_range=%s (%s)", config.quantize, per_channel, reduce_range, why)

    with eval_mode(model), atomic_dir(out_dir) as tmp:
        work = tmp / ".work"
        work.mkdir()
        plain = work / "plain.onnx"
        torch_to_onnx(model, trace_feed(tokenizer, spec), spec, plain, opset=opset)
        feeds = sessions.batches(
            tokenizer,
            sample.texts,
            sample.pairs,
            spec.inputs,
            max_length=config.max_length,
            batch_size=config.eval_batch,
        )
        check_feeds = sessions.first_rows(feeds, validate.PARITY_ROWS)
        torch_ref = validate.torch_logits(model, check_feeds)
        parity = validate.check_parity(torch_ref, plain, check_feeds, atol=atol, what="fp32 ONNX")
        fp32_logits = sessions.run_logits(sessions.make_session(plain, threads=config.threads), feeds)

        candidates: dict[str, Path] = {}
        fusion: dict[str, Any] = {"mode": config.fuse}
        if config.fuse in ("off", "auto"):
            candidates["plain"] = plain
        if not spec.fusion:
            fusion["unavailable"] = f"ONNX Runtime has no transformer fusion for {spec.model_type}"
        elif config.fuse in ("on", "auto"):
            counted = _fusion_structure(structure, model)
            fused = _fused_candidate(
                plain, work / "fused.onnx", spec, counted, config, torch_ref, check_feeds, atol, fusion
            )
            if fused is not None:
                candidates["fused"] = fused

        calibration = None
        if config.quantize == "static":
            texts = list(calibration_texts or sample.texts)[: config.calibration_samples]
            calibration = sessions.batches(
                tokenizer, texts, None, spec.inputs, max_length=config.max_length, batch_size=8
            )
        feed = sessions.timing_feed(tokenizer, sample.texts, spec.inputs, batch=config.batch, seq_len=config.seq_len)
        finals: dict[str, Path] = {}
        gates: dict[str, GateResult] = {}
        for name, path in candidates.items():
            if settings is None:
                finals[name] = path
                continue
            finals[name] = work / f"{name}.int8.onnx"
            gates[name] = quantize_with_gate(
                path,
                finals[name],
                settings,
                gate=config.gate,
                reference=fp32_logits,
                feeds=feeds,
                calibration=calibration,
                threads=config.threads,
                name=name,
                try_per_channel=config.per_channel is None,
                timing_feed=feed,
                timing_runs=config.timing_runs,
            )

        for name in list(finals):  # the same graphs with residual norms ORT cannot fuse into SkipLayerNormalization
            variant = _unfused_norms(finals[name], work)
            if variant is None:
                continue
            if name in gates:  # ORT's fused kernel rounds differently: an int8 variant must pass the gate itself
                score = validate.agreement(fp32_logits, sessions.run_logits(sessions.make_session(variant), feeds))
                ok, why = score >= config.gate, f"agreement {score:.4f} < gate {config.gate}"
            else:
                try:
                    validate.check_parity(torch_ref, variant, check_feeds, atol=atol, what="unfused-norm fp32 ONNX")
                    ok, why = True, ""
                except ParityError as err:
                    ok, why = False, str(err)
            if ok:
                finals[f"{name}{UNFUSED}"] = variant
            else:
                logger.warning("%s with unfused norms is not a candidate: %s", name, why)
        # Timed at --threads and at 1 thread: one thread is a common edge setting and the steady measurement on a
        # host whose second core is busy (a fused graph chosen at 2 threads ran 10 % slower at 1: docs/benchmarks.md).
        by_threads = {
            t: sessions.time_graphs(finals, feed, threads=t, runs=config.timing_runs)
            for t in (sorted({1, config.threads}) if len(finals) > 1 else [config.threads])
        }
        timings = by_threads[config.threads]
        p50 = {t: {n: round(v["p50_ms"], 3) for n, v in times.items()} for t, times in by_threads.items()}
        choice = choose_graph(p50)
        fusion.update(
            choice=choice,
            timings_ms=p50[config.threads],
            timings_ms_by_threads={str(t): ms for t, ms in p50.items()},
            rule=f"another graph than plain only when its p50 is at least {FUSED_MIN_GAIN:.0%} below plain's at every "
            "thread count timed (the fastest at 1 thread among those)",
        )
        if len(finals) > 1:
            described = "; ".join(
                f"{t} thread(s): " + ", ".join(f"{n} {v:.2f} ms" for n, v in ms.items()) for t, ms in p50.items()
            )
            logger.info("fusion: %s → %s", described, choice)

        final = onnx.load(str(finals[choice]))
        graph_opset = next((o.version for o in final.opset_import if o.domain in ("", "ai.onnx")), opset)
        sparse_report = sparse.sparsify_(final, config.sparse_threshold) if config.sparse_threshold else None
        onnx.save(final, str(tmp / MODEL_NAME))
        gate = gates.get(choice.removesuffix(UNFUSED))  # the unfused-norm form computes exactly what its base does
        final_logits = gate.logits if gate is not None else fp32_logits
        if choice.removesuffix(UNFUSED) != "plain" and gate is None:
            final_logits = sessions.run_logits(sessions.make_session(finals[choice]), feeds)
        shutil.rmtree(work)

        accuracy = regression = None
        if sample.labels is not None and sample.regression:  # pearson, spearman, mse of fp32 and of the final graph
            regression = {
                "data": sample.source,
                "samples": len(sample),
                "fp32": validate.quality(fp32_logits, sample),
                "final": validate.quality(final_logits, sample),
            }
        elif sample.labels is not None:
            accuracy = {
                "data": sample.source,
                "samples": len(sample),
                "fp32": validate.accuracy(fp32_logits, sample.labels),
                "final": validate.accuracy(final_logits, sample.labels),
            }
        hf_config = copy.deepcopy(model.config)
        hf_config.compressor_structure = structure
        hf_config.architectures = [type(model).__name__]
        hf_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = {
            "toolchain": _toolchain(),
            "source": source or {},
            "stages": [*(stages or []), {"stage": "export", "config": _config_record(config)}],
            "structure": structure,
            "params": {"total": count_parameters(model), "encoder": count_parameters(model, encoder_only=True)},
            "quantization": _quantization_record(settings, config, gate, final),
            "fusion": {
                **fusion,
                "measured_at": {
                    "batch": config.batch,
                    "seq_len": config.seq_len,
                    "threads": config.threads,
                    "runs": config.timing_runs,
                },
                "timed": f"final graphs ({config.quantize if settings else 'fp32'})",
            },
            "parity": {"max_abs_diff": parity, "atol": atol, "samples": len(torch_ref)},
            "task": config_task(model.config.to_dict()),
            "accuracy": accuracy,
            "regression": regression,
            "latency": {
                **timings[choice],
                "batch": config.batch,
                "seq_len": config.seq_len,
                "threads": config.threads,
                "cpu": host_cpu(),
            },
            "sparse": _sparse_record(sparse_report, tmp / MODEL_NAME),
            "target": {
                "optimize_for": config.optimize_for,
                "note": TARGETS[config.optimize_for].note if config.optimize_for else None,
            },
            "eval_sample": {"source": sample.source, "samples": len(sample)},
            "opset": graph_opset,  # the final graph's own: a rewrite may import a newer opset than traced
            "max_length": config.max_length,
            "max_positions": max_tokens(model),  # what the runtime may pad to (RoBERTa: the table less its offset)
            "inputs": list(spec.inputs),
            "outputs": list(spec.outputs),
        }
        write_manifest(tmp, manifest)

    model_bytes = (out_dir / MODEL_NAME).stat().st_size
    logger.info("wrote %s (%.1f MB, %s, %s graph)", out_dir, model_bytes / 1e6, config.quantize, choice)
    return ExportReport(
        out_dir=out_dir,
        model_bytes=model_bytes,
        quantize=config.quantize,
        fusion_choice=choice,
        timings_ms=fusion["timings_ms"],
        parity_max_abs_diff=parity,
        agreement=gate.agreement if gate is not None else None,
        excluded_nodes=list(gate.excluded_nodes) if gate is not None else [],
        accuracy=accuracy,
        regression=regression,
        manifest=manifest,
    )


def choose_graph(p50_by_threads: dict[int, dict[str, float]]) -> str:
    """The graph to keep, from p50 ms per thread count and candidate (`plain`, `fused`, and their `+sum-norms`
    forms).

    Another graph replaces the plain one only when it is at least FUSED_MIN_GAIN faster at every thread count
    timed (smaller gaps are timing noise on a shared host, and the plain graph is the most portable); among those,
    the fastest at the fewest threads. A single candidate is kept as it is.
    """
    names = sorted(set().union(*(times.keys() for times in p50_by_threads.values())))
    if len(names) == 1:
        return names[0]
    default = "plain" if "plain" in names else names[0]
    better = [
        n
        for n in names
        if n != default and all(times[n] <= (1 - FUSED_MIN_GAIN) * times[default] for times in p50_by_threads.values())
    ]
    if not better:
        return default
    fewest = p50_by_threads[min(p50_by_threads)]
    return min(better, key=lambda n: (fewest[n], n))


def _unfused_norms(path: Path, work: Path) -> Path | None:
    """`path` with its residual norms written so ORT cannot fuse them (`optimize.unfuse_residual_norms_`), or None
    when the graph has none. The arithmetic is the same, but not the kernel's rounding: the caller checks it."""
    model = onnx.load(str(path))
    if not optimize.unfuse_residual_norms_(model):
        return None
    variant = work / f"{path.stem}{UNFUSED}.onnx"
    onnx.save(model, str(variant))
    return variant


def _fused_candidate(
    plain: Path,
    fused: Path,
    spec: ExportSpec,
    structure: dict[str, Any],
    config: ExportConfig,
    torch_ref: Any,
    feeds: list[sessions.Feed],
    atol: float,
    record: dict[str, Any],
) -> Path | None:
    """The ORT-fused graph, op-counted and parity-checked; None when `auto` must fall back to the plain graph."""
    optimize.fuse_graph(plain, fused, spec)
    check = optimize.check_fused_ops(onnx.load(str(fused)), structure, spec)
    record.update(fused_ops=check.counts, expected_fused_ops=check.expected, fused_op_problems=check.problems)
    optimize.enforce(check, strict=config.strict)
    try:
        record["fused_parity"] = validate.check_parity(torch_ref, fused, feeds, atol=atol, what="fused fp32 ONNX")
    except ParityError as err:
        if config.fuse == "on":
            raise
        logger.warning("%s; keeping the plain graph", err)
        record["fused_parity"] = str(err)
        return None
    return fused


def _structure(model: torch.nn.Module) -> dict[str, Any]:
    """The model's structure (unpruned when never pruned), without touching the caller's config."""
    return copy.deepcopy(ensure_structure(SimpleNamespace(config=copy.deepcopy(model.config))))


def _fusion_structure(structure: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """`structure` plus the GELUs of the FFN adapters a merge kept (AdaMix adapter experts), which ORT fuses too."""
    from compressor.arch.adapters import adapter_record

    record = adapter_record(model)
    if record is None or record["activation"] != "gelu":
        return structure
    return {**structure, "adapter_gelus": len(record["layers"])}


def _check_lengths(model: torch.nn.Module, config: ExportConfig) -> None:
    limit = max_tokens(model)  # RoBERTa's position table holds padding_idx + 1 fewer tokens than its size
    for name in ("max_length", "seq_len"):
        if limit is not None and getattr(config, name) > limit:
            flag = name.replace("_", "-")
            raise ConfigError(
                f"`{name}` {getattr(config, name)} exceeds the model's {limit} positions; pass --{flag} {limit} "
                "or less"
            )


def _check_disk_space(model: torch.nn.Module, out_dir: Path) -> None:
    """Fail before any work when the candidates graphs and the artifact cannot fit on the disk."""
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    needed = 4 * fp32_bytes + DISK_MARGIN  # plain + fused fp32, their int8 versions, the final copy
    probe = out_dir.parent if str(out_dir.parent) else Path(".")
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise ExportError(
            f"export needs about {needed / 1e6:.0f} MB free next to --out `{out_dir}`; only {free / 1e6:.0f} MB "
            f"are free on `{probe}`"
        )


def _toolchain() -> dict[str, str]:
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("compressor", "torch", "transformers", "onnx", "onnxruntime", "optimum", "optimum-onnx"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _config_record(config: ExportConfig) -> dict[str, Any]:
    return config_to_dict(config)


def _quantization_record(
    settings: QuantSettings | None, config: ExportConfig, gate: GateResult | None, final: onnx.ModelProto
) -> dict[str, Any]:
    if settings is None:
        return {"mode": "none"}
    record = (gate.settings if gate is not None and gate.settings is not None else settings).describe()
    if record.get("embedding_decode") == "load":  # the fp32 table decoded at load (ORT holds more: see int4.py)
        record["embedding_decoded_bytes"] = decoded_bytes(final)
    record["per_channel_choice"] = "auto" if config.per_channel is None else "given"
    record["optimize_for"] = config.optimize_for
    record["gate"] = gate.describe() if gate is not None else None
    return record


def _sparse_record(report: sparse.SparseReport | None, model_path: Path) -> dict[str, Any] | None:
    if report is None:
        return None
    record = report.describe()
    stored = model_path.stat().st_size
    record.update(model_bytes=stored, model_bytes_dense=stored - report.stored_bytes + report.dense_bytes)
    return record
