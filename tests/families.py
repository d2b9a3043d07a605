"""The family test table: a tiny seeded classifier and a real tokenizer of its kind per supported model family.

Tokenizers are built here with the `tokenizers` library (WordPiece for BERT / DistilBERT / ELECTRA, byte-level BPE
for RoBERTa, Unigram for XLM-R and DeBERTa), trained on the tiny vocabulary of `tests.models`: nothing downloads.
Adding a family is one row of FAMILIES (plus its ArchSpec and export spec).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, PretrainedConfig, PreTrainedTokenizerFast

from tests.models import NEGATIVE, POSITIVE, SPECIAL, WORDS, tiny_config, tiny_tokenizer

LABELS = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
CORPUS = [*POSITIVE, *NEGATIVE, " ".join(WORDS), *WORDS]


def _wordpiece(cls_name: str) -> Callable[[Path], PreTrainedTokenizerFast]:
    def build(tmp: Path) -> PreTrainedTokenizerFast:
        import transformers

        tmp.mkdir(parents=True, exist_ok=True)
        vocab = tmp / "vocab.txt"
        vocab.write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
        return getattr(transformers, cls_name)(vocab_file=str(vocab), do_lower_case=True, model_max_length=64)

    return build


def _byte_bpe(tmp: Path) -> PreTrainedTokenizerFast:
    """RoBERTa's kind: byte-level BPE (vocab.json + merges.txt) with <s> … </s> templates."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    tmp.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0-3 as in roberta-base: pad 1
    bpe.train_from_iterator(CORPUS, vocab_size=320, min_frequency=1, show_progress=False, special_tokens=specials)
    bpe.save_model(str(tmp))
    return RobertaTokenizerFast(
        vocab_file=str(tmp / "vocab.json"), merges_file=str(tmp / "merges.txt"), model_max_length=64
    )


def _unigram(cls_name: str, specials: dict[str, str]) -> Callable[[Path], PreTrainedTokenizerFast]:
    """XLM-R's and DeBERTa's kind: a SentencePiece-style Unigram model (▁ word boundaries) with their templates."""

    def build(tmp: Path) -> PreTrainedTokenizerFast:
        import transformers
        from tokenizers import SentencePieceUnigramTokenizer
        from tokenizers.processors import TemplateProcessing

        order = ["cls", "pad", "sep", "unk", "mask"]
        unigram = SentencePieceUnigramTokenizer()
        unigram.train_from_iterator(
            CORPUS,
            vocab_size=120,
            show_progress=False,
            special_tokens=[specials[k] for k in order],
            unk_token=specials["unk"],
        )
        cls, sep = specials["cls"], specials["sep"]
        ids = {k: unigram.token_to_id(specials[k]) for k in order}
        # XLM-R: <s> A </s></s> B </s>; DeBERTa: [CLS] A [SEP] B [SEP] (type ids 1 for B)
        pair = f"{cls} $A {sep} {sep} $B:1 {sep}:1" if cls == "<s>" else f"{cls} $A {sep} $B:1 {sep}:1"
        unigram.post_processor = TemplateProcessing(
            single=f"{cls} $A {sep}", pair=pair, special_tokens=[(cls, ids["cls"]), (sep, ids["sep"])]
        )
        tokens = {f"{k}_token": v for k, v in specials.items()}
        if cls == "<s>":
            tokens |= {"bos_token": cls, "eos_token": sep}
        return getattr(transformers, cls_name)(tokenizer_object=unigram._tokenizer, model_max_length=64, **tokens)

    return build


@dataclass(frozen=True)
class Family:
    """One row of the family table."""

    model_type: str
    tokenizer: Callable[[Path], PreTrainedTokenizerFast]
    config: Callable[[int], PretrainedConfig]  # vocabulary size → a tiny config (2 layers, hidden 32, 4 heads)
    inputs: tuple[str, ...]  # the graph inputs its export must declare
    width: bool = True  # hidden-width pruning supported
    fusion: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)


def _common(vocab: int) -> dict[str, Any]:
    return dict(vocab_size=vocab, max_position_embeddings=72, num_labels=2, **LABELS)


def _bert(vocab: int) -> PretrainedConfig:
    return tiny_config(vocab_size=vocab)


def _distilbert(vocab: int) -> PretrainedConfig:
    from transformers import DistilBertConfig

    return DistilBertConfig(
        **_common(vocab),
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=37,
        dropout=0.0,
        attention_dropout=0.0,
        seq_classif_dropout=0.0,
        pad_token_id=0,
    )


def _bert_shaped(cls_name: str, **extra: Any) -> Callable[[int], PretrainedConfig]:
    def build(vocab: int) -> PretrainedConfig:
        import transformers

        values = dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        return getattr(transformers, cls_name)(**_common(vocab), **{**values, **extra})

    return build


def _deberta(shared: bool) -> Callable[[int], PretrainedConfig]:
    """DeBERTa-v3's shape: relative attention in both directions (c2p, p2c), log buckets, no absolute positions,
    no token types; `shared`: the relative embeddings go through q/k (v3) or through pos_key_proj/pos_query_proj."""
    return _bert_shaped(
        "DebertaV2Config",
        relative_attention=True,
        position_buckets=16,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        type_vocab_size=0,
        share_att_key=shared,
        norm_rel_ebd="layer_norm",
        pooler_hidden_size=32,
        pooler_hidden_act="gelu",
        pooler_dropout=0.0,
    )


_DEBERTA_TOKENS = {"cls": "[CLS]", "pad": "[PAD]", "sep": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}

FAMILIES: dict[str, Family] = {
    "bert": Family("bert", tiny_tokenizer, _bert, ("input_ids", "attention_mask", "token_type_ids")),
    "distilbert": Family(
        "distilbert", _wordpiece("DistilBertTokenizerFast"), _distilbert, ("input_ids", "attention_mask")
    ),
    "roberta": Family(
        "roberta",
        _byte_bpe,
        _bert_shaped("RobertaConfig", type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2),
        ("input_ids", "attention_mask"),
    ),
    "xlm-roberta": Family(
        "xlm-roberta",
        _unigram(
            "XLMRobertaTokenizerFast", {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"}
        ),
        _bert_shaped("XLMRobertaConfig", type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2),
        ("input_ids", "attention_mask"),
    ),
    # embedding_size ≠ hidden_size: the embeddings_project path (ELECTRA-small's shape)
    "electra": Family(
        "electra",
        _wordpiece("ElectraTokenizerFast"),
        _bert_shaped("ElectraConfig", embedding_size=24),
        ("input_ids", "attention_mask", "token_type_ids"),
    ),
    "deberta-v2": Family(
        "deberta-v2",
        _unigram("DebertaV2TokenizerFast", _DEBERTA_TOKENS),
        _deberta(shared=True),
        ("input_ids", "attention_mask"),
        width=False,
        fusion=False,
    ),
    "deberta-v2-pos-proj": Family(  # DeBERTa-v2's own shape: separate pos_key_proj / pos_query_proj, token types
        "deberta-v2",
        _unigram("DebertaV2TokenizerFast", _DEBERTA_TOKENS),
        _deberta(shared=False),
        ("input_ids", "attention_mask", "token_type_ids"),
        width=False,
        fusion=False,
        overrides={"type_vocab_size": 2},
    ),
}


def family_tokenizer(row: str, tmp: Path) -> PreTrainedTokenizerFast:
    return FAMILIES[row].tokenizer(tmp)


def family_model(row: str, tokenizer: PreTrainedTokenizerFast, seed: int = 0, **overrides: Any) -> Any:
    """A tiny seeded classifier of the family row whose vocabulary fits `tokenizer`, with non-trivial biases and norms
    (so that surgery mistakes show in the logits)."""
    config = FAMILIES[row].config(len(tokenizer))
    config.pad_token_id = tokenizer.pad_token_id
    for key, value in {**FAMILIES[row].overrides, **overrides}.items():
        setattr(config, key, value)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def save_family_checkpoint(row: str, path: Path, seed: int = 0, **overrides: Any) -> Path:
    """A tiny checkpoint directory of the family row: model.safetensors, config.json, tokenizer files."""
    from compressor.checkpoint import save_model

    tokenizer = family_tokenizer(row, path / "_tok")
    save_model(family_model(row, tokenizer, seed, **overrides), tokenizer, path)
    return path
