"""ONNX export: torch.onnx → parity → fusion by measurement → gated int8 → sparse storage → artifact directory.

Modules: `config` (ExportConfig, torch-free), `export` (the `export_onnx` verb), `specs` (per-architecture graph
signatures), `validate`, `optimize`, `quantize`, `weight_only`, `sparse`, `sessions`, `cpu`.
"""
