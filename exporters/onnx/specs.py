"""What an exported graph looks like, per architecture: declared here, never branched on in the exporter.

Adding a family (RoBERTa, DistilBERT, …) is one `EXPORT_SPECS.register` call plus its row in the test matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

from compressor.registry import Registry

BATCH, SEQUENCE = "batch", "sequence"


@dataclass(frozen=True)
class ExportSpec:
    """Graph signature and checks for one `config.model_type`."""

    model_type: str
    inputs: tuple[str, ...]  # int64, each shaped (batch, sequence)
    outputs: tuple[str, ...] = ("logits",)  # float, (batch, num_labels)
    opset: int = 17
    atol: float = 1e-4  # max |Δlogit| between PyTorch and the fp32 graph
    optimizer_model_type: str = "bert"  # `model_type` of onnxruntime.transformers.optimizer
    # fused ops that carry one node per layer that keeps heads / keeps FFN neurons (see optimize.expected_fused_ops)
    attention_ops: tuple[str, ...] = ("Attention", "MultiHeadAttention")
    gelu_ops: tuple[str, ...] = ("BiasGelu", "FastGelu", "Gelu")
    skip_norm_ops: tuple[str, ...] = ("SkipLayerNormalization",)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Dynamic batch and sequence axes on every input; dynamic batch on every output."""
        axes: dict[str, dict[int, str]] = {name: {0: BATCH, 1: SEQUENCE} for name in self.inputs}
        axes.update({name: {0: BATCH} for name in self.outputs})
        return axes


EXPORT_SPECS: Registry[ExportSpec] = Registry("export spec")
EXPORT_SPECS.register("bert", ExportSpec(model_type="bert", inputs=("input_ids", "attention_mask", "token_type_ids")))
