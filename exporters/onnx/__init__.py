"""ONNX export: torch.onnx → parity → fusion by measurement → gated int8 → sparse storage → artifact directory."""

from exporters.onnx.config import ExportConfig, ExportReport
from exporters.onnx.export import export_onnx
from exporters.onnx.specs import EXPORT_SPECS, ExportSpec

__all__ = ["EXPORT_SPECS", "ExportConfig", "ExportReport", "ExportSpec", "export_onnx"]
