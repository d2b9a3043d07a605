"""Checkpoint-level pruning: load → prune_ → (vocabulary) → evaluate → save atomically."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from compressor.checkpoint import load_model, save_model
from compressor.errors import ConfigError
from compressor.fs import atomic_dir, check_out_dir
from compressor.prune.api import prune_
from compressor.prune.config import PruneConfig

logger = logging.getLogger(__name__)


def prune_checkpoint(
    model_ref: str,
    out_dir: Path,
    config: PruneConfig,
    *,
    data: Path | None = None,
    eval_data: Path | None = None,
    vocab: Path | None = None,
    columns: dict[str, Any] | None = None,
    force: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Prune the checkpoint `model_ref` per `config` and save it to `out_dir`; returns a JSON-able report."""
    from compressor.data import load_data
    from compressor.prune.vocab import model_bytes, prune_vocab_, unknown_rate, used_token_ids
    from compressor.train.config import is_main_process
    from compressor.train.loop import evaluate

    out_dir = Path(out_dir)
    check_out_dir(out_dir, force=force)
    columns = columns or {}
    if config.recover != "none" and data is None:
        raise ConfigError("--recover-steps/--recover need --data (training sentences for recovery)")
    model, tokenizer = load_model(model_ref)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    train = load_data(data, id2label=id2label, **columns) if data else None
    val = load_data(eval_data, id2label=id2label, **columns) if eval_data else None
    report = prune_(model, config, tokenizer=tokenizer, data=train, eval_data=val, quiet=quiet)
    out: dict[str, Any] = asdict(report)
    if vocab is not None:
        text_columns = {k: v for k, v in columns.items() if k != "label_column"}
        vocab_data = load_data(vocab, require_labels=False, **text_columns)
        keep = used_token_ids(tokenizer, vocab_data.texts, vocab_data.text_pairs)
        bytes_before = model_bytes(model)
        v = prune_vocab_(model, keep, tokenizer.unk_token_id, fallback=config.vocab_fallback)
        out["vocab"] = asdict(v) | {"model_bytes_before": bytes_before, "model_bytes_after": model_bytes(model)}
        if val is not None:
            out["vocab"]["validation_unknown_rate"] = unknown_rate(tokenizer, keep, val.texts, val.text_pairs)
        logger.info(
            "vocabulary: kept %d of %d token ids; model %.1f MB → %.1f MB",
            v.kept,
            v.source_size,
            bytes_before / 1e6,
            out["vocab"]["model_bytes_after"] / 1e6,
        )
    if val is not None:
        out["eval_accuracy"] = evaluate(model, tokenizer, val)["accuracy"]
    if is_main_process():  # under accelerate/torchrun only rank 0 writes
        with atomic_dir(out_dir) as tmp:
            save_model(model, tokenizer, tmp)
    return out
