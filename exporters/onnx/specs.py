"""What an exported graph looks like, per architecture: declared here, never branched on in the exporter.

Adding a family is one `EXPORT_SPECS.register` call (beside its `ARCHS` entry in `compressor/arch/table.py`) plus
its row in the family test table (`tests/compressor/arch/test_families.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from compressor.arch.table import arch_for
from compressor.registry import Registry

BATCH, SEQUENCE = "batch", "sequence"


@dataclass(frozen=True)
class ExportSpec:
    """Graph signature and checks for one `config.model_type`."""

    model_type: str
    # int64, each shaped (batch, sequence): every input the family's graph may take; `for_config` drops
    # token_type_ids for a model with one token type (RoBERTa / XLM-R checkpoints, usually)
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ("logits",)  # float, (batch, num_labels)
    opset: int = 17
    atol: float = 1e-4  # max |Δlogit| between PyTorch and the fp32 graph
    optimizer_model_type: str = "bert"  # `model_type` of onnxruntime.transformers.optimizer
    fusion: bool = True  # False: ORT has no transformer fusion for this family, so only the plain graph is built
    fused_attention: bool = True  # ORT's attention fusion matches this family's attention subgraph
    head_gelu: int = 0  # GELU nodes outside the encoder layers (ELECTRA's classification head)
    # fused ops that carry one node per layer that keeps heads / keeps FFN neurons (see optimize.expected_fused_ops)
    attention_ops: tuple[str, ...] = ("Attention", "MultiHeadAttention")
    gelu_ops: tuple[str, ...] = ("BiasGelu", "FastGelu", "Gelu")
    skip_norm_ops: tuple[str, ...] = ("SkipLayerNormalization",)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Dynamic batch and sequence axes on every input; dynamic batch on every output."""
        axes: dict[str, dict[int, str]] = {name: {0: BATCH, 1: SEQUENCE} for name in self.inputs}
        axes.update({name: {0: BATCH} for name in self.outputs})
        return axes

    def for_config(self, config: Any) -> ExportSpec:
        """This spec with the inputs a model of `config` really reads (the architecture table's rule)."""
        reads = arch_for(getattr(config, "model_type", None)).model_inputs(config)
        return replace(self, inputs=tuple(n for n in self.inputs if n in reads))


EXPORT_SPECS: Registry[ExportSpec] = Registry("export spec")
EXPORT_SPECS.register("bert", ExportSpec(model_type="bert", inputs=("input_ids", "attention_mask", "token_type_ids")))
# ORT's BERT fusion also serves DistilBERT, RoBERTa and ELECTRA (optimum maps them to "bert" too). It fuses their
# GELUs and skip-norms; DistilBERT's attention (masked_fill with the dtype minimum) it leaves unfused (ORT 1.32).
EXPORT_SPECS.register(
    "distilbert", ExportSpec(model_type="distilbert", inputs=("input_ids", "attention_mask"), fused_attention=False)
)
for _name in ("roberta", "xlm-roberta"):
    EXPORT_SPECS.register(
        _name, ExportSpec(model_type=_name, inputs=("input_ids", "attention_mask", "token_type_ids"))
    )
# DeBERTa-v2 / v3: ORT has no fusion for disentangled attention, so only the plain graph is built (ORT's
# session-level optimisations still apply when it loads).
EXPORT_SPECS.register(
    "deberta-v2",
    ExportSpec(model_type="deberta-v2", inputs=("input_ids", "attention_mask", "token_type_ids"), fusion=False),
)
EXPORT_SPECS.register(
    "electra", ExportSpec(model_type="electra", inputs=("input_ids", "attention_mask", "token_type_ids"), head_gelu=1)
)
