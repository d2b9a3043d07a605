"""Data augmentation for distillation: more inputs on which the pruned student learns to match its teacher.

A distilled student matches the teacher only where it is shown inputs; on a task's own training rows that leaves
the words and phrasings of the user's future inputs unseen. TinyBERT (Jiao et al. 2020, §3.2) widens the training
set by replacing words with neighbours in an embedding space and lets the teacher label the new rows; the gains
are largest for the smallest students. This follows that recipe with the one embedding every checkpoint has, the
teacher's own input embedding (no GloVe, no masked-LM head, nothing to download): each single-token word is
replaced, with probability `rate`, by one of its nearest whole-word tokens (cosine). The teacher then labels each
new row (its arg-max class, or its score for a regression head), so the task loss and the distillation terms agree.

No maintained library does this for an arbitrary tokenizer offline (nlpaug and TextAttack fetch embeddings or
models from the hub), hence this module.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from compressor.data import LabelledData

logger = logging.getLogger(__name__)

WORD = re.compile(r"\w+|\W+")  # words and the text between them, so a row's spacing and punctuation survive
NEIGHBOURS = 15  # candidates per word (TinyBERT's K)


class WordNeighbours:
    """The `k` nearest whole-word tokens of every whole-word token, by cosine of the teacher's input embedding.

    A whole word is a vocabulary token that spells an alphabetic word of two or more letters and that the
    tokenizer turns back into that single token when the word follows a space (so it works for WordPiece, BPE
    with a space marker and SentencePiece alike). Lookup is case-insensitive for lower-casing tokenizers.
    """

    def __init__(self, tokenizer: Any, embedding: torch.Tensor, k: int = NEIGHBOURS) -> None:
        vocab: dict[str, int] = tokenizer.get_vocab()
        ids = sorted(vocab.values())
        tokens = tokenizer.convert_ids_to_tokens(ids)
        words = [tokenizer.convert_tokens_to_string([t]).strip() for t in tokens]
        special = set(tokenizer.all_special_ids)
        candidates = [
            (i, w) for i, w in zip(ids, words, strict=True) if i not in special and len(w) > 1 and w.isalpha()
        ]
        encoded = tokenizer([" " + w for _, w in candidates], add_special_tokens=False)["input_ids"]
        kept = [(i, w) for (i, w), e in zip(candidates, encoded, strict=True) if e == [i]]
        self.words = [w for _, w in kept]
        self.index = {}
        for n, w in enumerate(self.words):
            self.index.setdefault(w, n)
            self.index.setdefault(w.lower(), n)
        rows = torch.tensor([i for i, _ in kept], dtype=torch.long)
        self.neighbours = _nearest(embedding.detach().float().cpu()[rows], k) if kept else np.zeros((0, k), int)

    def __len__(self) -> int:
        return len(self.words)

    def replace(self, text: str, rate: float, rng: np.random.Generator) -> str:
        """`text` with each known word replaced by a random one of its neighbours with probability `rate`."""
        pieces = WORD.findall(text)
        for n, piece in enumerate(pieces):
            at = self.index.get(piece, self.index.get(piece.lower()))
            if at is None or rng.random() >= rate:
                continue
            new = self.words[int(self.neighbours[at, rng.integers(self.neighbours.shape[1])])]
            pieces[n] = new.capitalize() if piece[:1].isupper() else new
        return "".join(pieces)


def _nearest(rows: torch.Tensor, k: int, chunk: int = 4096) -> np.ndarray:
    """Per row, the positions of its `k` most cosine-similar other rows."""
    unit = nn.functional.normalize(rows, dim=1)
    k = min(k, len(rows) - 1) or 1
    out = []
    for start in range(0, len(rows), chunk):
        sims = unit[start : start + chunk] @ unit.T
        sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])] = -2.0  # not itself
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out).numpy()


def augment(
    data: LabelledData,
    teacher: nn.Module,
    tokenizer: Any,
    *,
    copies: int,
    rate: float,
    seed: int,
    embedding: torch.Tensor,
    batch_size: int = 128,
    max_length: int = 128,
) -> LabelledData:
    """`data` followed by `copies` rewritten versions of each row, labelled by `teacher`.

    Rows no word of which could be replaced are not repeated (they would only weigh the original row double).
    """
    neighbours = WordNeighbours(tokenizer, embedding)
    rng = np.random.default_rng(seed)
    texts, pairs = [], [] if data.text_pairs is not None else None
    for _ in range(copies):
        for n, text in enumerate(data.texts):
            new = neighbours.replace(text, rate, rng)
            new_pair = None if pairs is None else neighbours.replace(data.text_pairs[n], rate, rng)
            if new == text and (pairs is None or new_pair == data.text_pairs[n]):
                continue
            texts.append(new)
            if pairs is not None:
                pairs.append(new_pair)
    labels = teacher_labels(
        teacher, tokenizer, texts, pairs, regression=data.is_regression, batch_size=batch_size, max_length=max_length
    )
    logger.info(
        "augmentation: %s rewritten rows (%d cop%s, rate %.2f, %s whole words with neighbours)",
        f"{len(texts):,}",
        copies,
        "y" if copies == 1 else "ies",
        rate,
        f"{len(neighbours):,}",
    )
    return LabelledData(
        [*data.texts, *texts],
        [*data.labels, *labels],
        data.id2label,
        data.path,
        None if pairs is None else [*data.text_pairs, *pairs],
        data.columns,
        data.task,
    )


@torch.no_grad()
def teacher_labels(
    teacher: nn.Module,
    tokenizer: Any,
    texts: list[str],
    pairs: list[str] | None,
    *,
    regression: bool,
    batch_size: int = 128,
    max_length: int = 128,
) -> list[Any]:
    """The teacher's arg-max class (a regression head: its score) for each text, in batches of similar length."""
    teacher.eval()
    device = next(teacher.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))
    out: list[Any] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in chunk],
            [pairs[i] for i in chunk] if pairs is not None else None,
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        ).to(device)
        logits = teacher(**enc).logits.float()
        values = logits[:, 0].tolist() if regression else logits.argmax(-1).tolist()
        for i, v in zip(chunk, values, strict=True):
            out[i] = v
    return out
