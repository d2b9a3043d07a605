"""compressor: BERT-family classifier → small, fast ONNX artifact for edge CPUs.

The verbs are imported lazily (PEP 562) so that `import compressor.errors` (used by the light runtime CLI path)
does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_VERBS = {
    "load_model": "compressor.checkpoint",
    "save_model": "compressor.checkpoint",
    "load_data": "compressor.data",
    "finetune": "compressor.finetune",
    "merge": "compressor.merge",
    "prune_": "compressor.prune.api",
    "analyse": "compressor.sensitivity",
    "export_onnx": "exporters.onnx",
    "run_pipeline": "compressor.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        return getattr(importlib.import_module(_VERBS[name]), name)
    raise AttributeError(f"module 'compressor' has no attribute {name!r}")


__all__ = sorted(_VERBS)
