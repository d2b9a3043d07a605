"""The architecture table: where each model family keeps its q/k/v/o projections, FFN linears, norms, embeddings
and classifier, as dotted paths. Methods, surgery, export and the runtime ask it instead of hard-coding paths.

Torch-free, so configs and the CLI can name roles without loading the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from compressor.registry import Registry

# The projections a method or a scorer can address by role, in layer order.
LINEAR_ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of one model family live, as dotted paths."""

    model_type: str
    base: str  # the encoder model attribute, e.g. "bert"
    layers: str  # ModuleList of encoder layers, from the task model
    attention: str  # attention block inside a layer (holds self-attention and its output)
    self_attention: str
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
    classifier: str
    # the other modules that read or write the residual stream (what width pruning cuts); "" when a family has none
    position_embeddings: str = ""
    token_type_embeddings: str = ""
    embeddings_norm: str = ""
    pooler: str = ""  # a dense layer reading the first token's state (its outputs feed the classifier)

    def stream_embeddings(self) -> list[str]:
        """Embedding tables whose columns are the residual stream's dimensions."""
        return [p for p in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings) if p]


ARCHS: Registry[ArchSpec] = Registry("architecture")
ARCHS.register(
    "bert",
    ArchSpec(
        model_type="bert",
        base="bert",
        layers="bert.encoder.layer",
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
        embeddings="bert.embeddings",
        word_embeddings="bert.embeddings.word_embeddings",
        classifier="classifier",
        position_embeddings="bert.embeddings.position_embeddings",
        token_type_embeddings="bert.embeddings.token_type_embeddings",
        embeddings_norm="bert.embeddings.LayerNorm",
        pooler="bert.pooler.dense",
    ),
)
