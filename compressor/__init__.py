"""compressor: BERT-family classifier → small, fast ONNX artifact for edge CPUs.

The verbs are imported lazily (PEP 562) so that `import compressor.errors` (used by the light runtime CLI path)
does not pull in torch. Each takes `(model, config, *, …)` and returns a model or a report:

    model, tokenizer = load_model("minilm", num_labels=2)
    result = finetune(model, LoraConfig(rank=8), tokenizer=tokenizer, data=train, work_dir=Path("work"))
    model = merge(result.model)
    report = analyse(model, AnalyseConfig(budget="flops=0.5"), tokenizer=tokenizer, data=train)
    prune_(model, PruneConfig(plan=...), tokenizer=tokenizer, data=train)
    export_onnx(model, ExportConfig(), tokenizer=tokenizer, out_dir=Path("artifact"), eval_data=val)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_VERBS = {
    "load_model": "compressor.checkpoint",
    "save_model": "compressor.checkpoint",
    "load_data": "compressor.data",
    "finetune": "compressor.methods.api",
    "merge": "compressor.methods.api",
    "prune_": "compressor.prune.api",
    "analyse": "compressor.sensitivity.analyse",
    "export_onnx": "exporters.onnx.export",
    "benchmark": "exporters.measure",
    "run_pipeline": "compressor.stages.runner",
}


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        return getattr(importlib.import_module(_VERBS[name]), name)
    raise AttributeError(f"module 'compressor' has no attribute {name!r}")


__all__ = sorted(_VERBS)
