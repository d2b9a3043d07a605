"""Tiny seeded BERT classifiers and a tiny tokenizer, built from a config: nothing downloads."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

WORDS = (
    "the a an movie film story acting plot is was are not very really so good great fun lovely "
    "wonderful bad awful boring dull terrible and but it this that i loved hated with of to"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["a great movie", "lovely and wonderful acting", "i loved this film", "really fun story", "so good"]
NEGATIVE = ["a bad movie", "awful and boring acting", "i hated this film", "really dull plot", "so terrible"]


def tiny_tokenizer(tmp: Path) -> BertTokenizerFast:
    tmp.mkdir(parents=True, exist_ok=True)
    vocab = tmp / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True, model_max_length=64)


def tiny_config(**overrides: object) -> BertConfig:
    values = dict(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    values.update(overrides)
    config = BertConfig(**values)
    config._attn_implementation = "eager"
    return config


def tiny_model(seed: int = 0, **overrides: object) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_config(**overrides)).eval()
    with torch.no_grad():  # non-trivial biases and norms so that surgery mistakes show in the logits
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def save_tiny_checkpoint(path: Path, seed: int = 0, **overrides: object) -> Path:
    """A tiny classifier checkpoint directory: model.safetensors, config.json, tokenizer."""
    from compressor.checkpoint import save_model

    tokenizer = tiny_tokenizer(path / "_tok")
    save_model(tiny_model(seed, **overrides), tokenizer, path)
    return path


def write_tiny_data(path: Path, n: int = 40, *, fmt: str = "tsv") -> Path:
    """A small balanced sentiment file in SST-2 layout (`sentence`, `label`)."""
    rows = []
    for i in range(n):
        pool, label = (POSITIVE, 1) if i % 2 == 0 else (NEGATIVE, 0)
        rows.append((pool[(i // 2) % len(pool)], label))
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "tsv":
        path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")
    elif fmt == "csv":
        path.write_text("sentence,label\n" + "".join(f"{s},{y}\n" for s, y in rows), encoding="utf-8")
    elif fmt == "jsonl":
        import json

        path.write_text("".join(json.dumps({"sentence": s, "label": y}) + "\n" for s, y in rows), encoding="utf-8")
    return path


def tiny_pipeline_inputs(root: Path) -> dict[str, Path]:
    """A tiny checkpoint (integer label names, like SST-2's files) and tiny train / validation files in `root`."""
    model = save_tiny_checkpoint(
        root / "tiny", max_position_embeddings=160, id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1}
    )
    return {
        "model": model,
        "train": write_tiny_data(root / "train.tsv", 40),
        "eval": write_tiny_data(root / "val.tsv", 20),
    }


def encode(tokenizer: BertTokenizerFast, texts: list[str] | None = None) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts or POSITIVE + NEGATIVE, padding=True, return_tensors="pt"))


def run_stage_to(
    key: str,
    config: object,
    out: Path,
    *,
    model: Path | str | None = None,
    adapter: Path | None = None,
    train: Path | None = None,
    eval: Path | None = None,  # noqa: A002 - the DataSpec field's name
    resume: bool = False,
) -> dict:
    """Run one registered stage into `out`, as its command does (`run_stage`: out checked, locked, written whole);
    returns the stage's summary."""
    from compressor.stages import STAGES, Context
    from compressor.stages.context import DataFiles, DataSpec
    from compressor.stages.runner import run_stage

    spec = DataSpec(train=None if train is None else str(train), eval=None if eval is None else str(eval))
    ctx = Context(
        out=Path(out),
        data=DataFiles(spec),
        model=None if model is None else str(model),
        adapter=adapter,
        resume=resume,
        quiet=True,
        name=key,
    )
    return run_stage(STAGES.get(key), ctx, config)
