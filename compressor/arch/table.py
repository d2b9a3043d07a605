"""The architecture table: where each model family keeps its q/k/v/o projections, FFN linears, norms, embeddings
and classifier, as dotted paths, and what its config and attention modules call their sizes. Methods, surgery,
sensitivity, export and the runtime ask it instead of hard-coding paths or config attributes.

Adding a family is one `ARCHS.register` call here, one export spec (`exporters/onnx/specs.py`) and one row of the
family test table (`tests/compressor/arch/test_families.py`). Torch-free, so configs and the CLI can name roles
without loading the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compressor.errors import ModelError
from compressor.registry import Registry

# The projections a method or a scorer can address by role, in layer order.
LINEAR_ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
# Every input a family's forward may take, in the order graphs declare them; the runtime feeds no others.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of one model family live (dotted paths) and what its config calls its sizes.

    Paths under `layers` (`attention`, `query` …) are relative to one encoder layer; the others are relative to the
    task model (`…ForSequenceClassification`). An empty path means the family has no such part.
    """

    model_type: str
    base: str  # the encoder model attribute, e.g. "bert"
    layers: str  # ModuleList of encoder layers, from the task model
    # the module a layer without heads replaces: when `attn_norm` lies inside it (BERT: attention.output.LayerNorm)
    # the replacement computes LayerNorm(x + b_o) itself; when the norm sits beside it in the layer (DistilBERT's
    # sa_layer_norm), the replacement returns b_o and the layer adds the residual and normalises as before
    attention: str
    self_attention: str  # the module holding q/k/v and the head-count attributes its forward reads
    query: str
    key: str
    value: str
    attn_out: str  # output projection o
    attn_norm: str
    ffn_in: str
    ffn_out: str
    ffn_norm: str
    embeddings: str
    word_embeddings: str
    classifier: str  # the task head's module (a Linear, or a dense + out_proj head that trains whole)
    # the other modules that read or write the residual stream (what width pruning cuts); "" when a family has none
    position_embeddings: str = ""
    token_type_embeddings: str = ""
    embeddings_norm: str = ""
    embeddings_project: str = ""  # a Linear from the embedding width into the stream (ELECTRA when they differ)
    pooler: str = ""  # the dense layer reading the first token's state (BERT's pooler, RoBERTa's classifier.dense)
    pre_classifier: str = ""  # a head module the task model initialises besides `classifier`: trains with it
    # per-layer Linears whose output rows are per head like q/k/v (DeBERTa's pos_key_proj / pos_query_proj), sliced
    # with the heads; absent ones (share_att_key) are skipped
    head_projections: tuple[str, ...] = ()
    # config attribute names (DistilBERT: n_heads, dim, hidden_dim …); "" = the family has no such attribute
    heads_key: str = "num_attention_heads"
    hidden_key: str = "hidden_size"
    layers_key: str = "num_hidden_layers"
    intermediate_key: str = "intermediate_size"
    activation_key: str = "hidden_act"
    type_vocab_key: str = "type_vocab_size"
    # attributes of the `self_attention` module its forward reads: the head count and the context width
    heads_attr: str = "num_attention_heads"
    heads_width_attr: str = "all_head_size"
    inputs: tuple[str, ...] = MODEL_INPUTS  # what the forward takes (token_type_ids: see `model_inputs`)
    # RoBERTa / XLM-R number positions from padding_idx + 1 (the config's pad_token_id): that many fewer tokens fit
    # the position table; "" = positions start at 0
    position_offset_key: str = ""
    width_refusal: str = ""  # why hidden-width pruning cannot be exact for this family ("" = supported)

    def stream_embeddings(self) -> list[str]:
        """Embedding tables whose columns are the residual stream's dimensions (when there is no projection)."""
        return [p for p in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings) if p]

    def head_modules(self) -> list[str]:
        """The task head's modules, which train in every fine-tuning method."""
        return [p for p in (self.pre_classifier, self.classifier) if p]

    def num_heads(self, config: Any) -> int:
        return int(_read(config, self.heads_key))

    def hidden_size(self, config: Any) -> int:
        return int(_read(config, self.hidden_key))

    def num_layers(self, config: Any) -> int:
        return int(_read(config, self.layers_key))

    def intermediate_size(self, config: Any) -> int:
        return int(_read(config, self.intermediate_key))

    def activation(self, config: Any) -> str:
        return str(_read(config, self.activation_key))

    def set_num_layers(self, config: Any, layers: int) -> None:
        setattr(config, self.layers_key, layers)

    def max_tokens(self, config: Any) -> int | None:
        """How many tokens one sequence may have: the position table's size, less RoBERTa's offset."""
        positions = _read(config, "max_position_embeddings", 0)
        if not positions:
            return None
        offset = int(_read(config, self.position_offset_key)) + 1 if self.position_offset_key else 0
        return int(positions) - offset

    def model_inputs(self, config: Any) -> tuple[str, ...]:
        """The inputs this model really reads: token_type_ids only when it has two or more token types (a table
        of one row, RoBERTa's usual `type_vocab_size` 1, adds the same vector whatever the ids are)."""
        types = int(_read(config, self.type_vocab_key, 0)) if self.type_vocab_key else 0
        return tuple(n for n in self.inputs if n != "token_type_ids" or types > 1)


def _read(config: Any, key: str, default: Any = None) -> Any:
    """A config value from a PretrainedConfig or a config.json dict."""
    value = config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)
    if value is None:
        model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
        raise ModelError(f"config of model type `{model_type}` has no `{key}`; re-save the checkpoint")
    return value


ARCHS: Registry[ArchSpec] = Registry("architecture")


def arch_for(model_type: object) -> ArchSpec:
    """The ArchSpec of `model_type`, or one line naming the supported ones."""
    if not isinstance(model_type, str) or model_type not in ARCHS:
        raise ModelError(f"model type `{model_type}` is not supported; supported: {', '.join(ARCHS.names())}")
    return ARCHS.get(model_type)


# BERT and the families that copy its layer (RoBERTa, XLM-R, ELECTRA): attention.self / attention.output / FFN.
_BERT_LAYER = dict(
    layers="encoder.layer",
    attention="attention",
    self_attention="attention.self",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    attn_out="attention.output.dense",
    attn_norm="attention.output.LayerNorm",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    ffn_norm="output.LayerNorm",
    embeddings="embeddings",
    word_embeddings="embeddings.word_embeddings",
    position_embeddings="embeddings.position_embeddings",
    token_type_embeddings="embeddings.token_type_embeddings",
    embeddings_norm="embeddings.LayerNorm",
)


def _bert_like(model_type: str, base: str, **fields: Any) -> ArchSpec:
    """A family with BERT's layer, its model paths under `base`."""
    paths = {k: (f"{base}.{v}" if k in _MODEL_PATHS else v) for k, v in _BERT_LAYER.items()}
    return ArchSpec(model_type=model_type, base=base, **{**paths, **fields})


_MODEL_PATHS = {"layers", "embeddings", "word_embeddings", "position_embeddings", "token_type_embeddings"}
_MODEL_PATHS |= {"embeddings_norm"}

ARCHS.register("bert", _bert_like("bert", "bert", classifier="classifier", pooler="bert.pooler.dense"))
# RoBERTa / XLM-R: BERT's layer; positions offset by padding_idx + 1 (computed from input_ids inside the model, so
# nothing here changes); a dense + out_proj head and no pooler; usually one token type (then no token_type_ids).
for _name in ("roberta", "xlm-roberta"):
    ARCHS.register(
        _name,
        _bert_like(
            _name, "roberta", classifier="classifier", pooler="classifier.dense", position_offset_key="pad_token_id"
        ),
    )
# ELECTRA: BERT's layer; a projection into the stream when embedding_size ≠ hidden_size; dense + out_proj head.
ARCHS.register(
    "electra",
    _bert_like(
        "electra",
        "electra",
        classifier="classifier",
        pooler="classifier.dense",
        embeddings_project="electra.embeddings_project",
    ),
)
# DeBERTa-v2 / v3: BERT's layer shape with query_proj / key_proj / value_proj; relative-position projections tied to
# the heads (with share_att_key the relative embeddings go through query_proj / key_proj themselves; without it,
# pos_key_proj / pos_query_proj carry per-head rows and are sliced with q/k/v); v3 has no token types; a ContextPooler
# (pooler.dense) the task model initialises. Width pruning is refused: the relative embeddings
# (encoder.rel_embeddings and their LayerNorm) live in the stream's space and every layer projects them.
ARCHS.register(
    "deberta-v2",
    ArchSpec(
        model_type="deberta-v2",
        base="deberta",
        layers="deberta.encoder.layer",
        attention="attention",
        self_attention="attention.self",
        query="attention.self.query_proj",
        key="attention.self.key_proj",
        value="attention.self.value_proj",
        attn_out="attention.output.dense",
        attn_norm="attention.output.LayerNorm",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        ffn_norm="output.LayerNorm",
        embeddings="deberta.embeddings",
        word_embeddings="deberta.embeddings.word_embeddings",
        position_embeddings="deberta.embeddings.position_embeddings",
        token_type_embeddings="deberta.embeddings.token_type_embeddings",
        embeddings_norm="deberta.embeddings.LayerNorm",
        embeddings_project="deberta.embeddings.embed_proj",
        classifier="classifier",
        pre_classifier="pooler",
        pooler="pooler.dense",
        head_projections=("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
        width_refusal="its relative-position embeddings live in the hidden space and every layer projects them "
        "through q/k; prune heads, FFN neurons and layers instead",
    ),
)
# DistilBERT: one MultiHeadSelfAttention module (q_lin … out_lin) beside the layer's sa_layer_norm; an `ffn` module
# holding both linears; config names n_heads / dim / hidden_dim / activation; no token types; a pre_classifier.
ARCHS.register(
    "distilbert",
    ArchSpec(
        model_type="distilbert",
        base="distilbert",
        layers="distilbert.transformer.layer",
        attention="attention",
        self_attention="attention",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        attn_out="attention.out_lin",
        attn_norm="sa_layer_norm",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        ffn_norm="output_layer_norm",
        embeddings="distilbert.embeddings",
        word_embeddings="distilbert.embeddings.word_embeddings",
        position_embeddings="distilbert.embeddings.position_embeddings",
        embeddings_norm="distilbert.embeddings.LayerNorm",
        classifier="classifier",
        pre_classifier="pre_classifier",
        pooler="pre_classifier",
        heads_key="n_heads",
        hidden_key="dim",
        layers_key="n_layers",
        intermediate_key="hidden_dim",
        activation_key="activation",
        type_vocab_key="",
        heads_attr="n_heads",
        heads_width_attr="dim",
        inputs=("input_ids", "attention_mask"),
    ),
)
