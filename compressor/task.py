"""The two tasks a sequence-classification head can do, and their metrics: classification (one logit per label,
accuracy) and regression (one output, a score: Pearson, Spearman and MSE against the labels).

Torch-free (numpy only), so the edge runtime, the benchmark and the training stack share one definition.

How a task is recognised:
    a checkpoint or artifact (its config.json): regression when `problem_type` is "regression" or it has one
        output (`num_labels` 1: Hugging Face trains such a head with MSE), else classification;
    data: `task: regression` / `classification` when given, else (`auto`) regression when every label is a number
        and at least one is not a whole number (STS-B's 3.8), else classification (SST-2's 0/1, label names).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = ("auto", CLASSIFICATION, REGRESSION)
REGRESSION_LABELS = {0: "LABEL_0"}  # Hugging Face's label map of a one-output head
METRIC = {CLASSIFICATION: "accuracy", REGRESSION: "pearson"}  # the headline metric of each task
REGRESSION_METRICS = ("pearson", "spearman", "mse")


def config_task(config: dict[str, Any]) -> str:
    """The task of a checkpoint's or artifact's config.json: regression for `problem_type: regression` or one
    output, else classification."""
    if config.get("problem_type") == REGRESSION:
        return REGRESSION
    raw = config.get("id2label")
    outputs = len(raw) if isinstance(raw, dict) and raw else config.get("num_labels")
    return REGRESSION if outputs == 1 else CLASSIFICATION


def _ranks(values: Any) -> Any:
    """Ranks 1..n with ties given their mean rank (as Spearman's ρ needs)."""
    import numpy as np

    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1, dtype=np.float64)
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):  # runs of equal values share their mean rank
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2
            start = end
    return ranks


def pearson(a: Any, b: Any) -> float:
    """Pearson's r of two vectors; 0.0 when either does not vary (no linear relation can be seen)."""
    import numpy as np

    x = np.asarray(a, dtype=np.float64) - np.mean(a)
    y = np.asarray(b, dtype=np.float64) - np.mean(b)
    norm = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / norm if norm > 0 else 0.0


def regression_metrics(predictions: Any, labels: Sequence[float]) -> dict[str, float]:
    """Pearson's r, Spearman's ρ and the mean squared error of one-output predictions against the labels.

    Args:
        predictions: (rows,) or (rows, 1) model outputs.
    """
    import numpy as np

    pred = np.asarray(predictions, dtype=np.float64).reshape(len(labels), -1)[:, 0]
    gold = np.asarray(labels, dtype=np.float64)
    return {
        "pearson": pearson(pred, gold),
        "spearman": pearson(_ranks(pred), _ranks(gold)),
        "mse": float(np.mean((pred - gold) ** 2)) if len(gold) else 0.0,
    }


def fidelity(reference: Any, outputs: Any) -> float:
    """R² of `outputs` against `reference` regression outputs: 1 − Σ(out − ref)² / Σ(ref − mean ref)².

    The int8 gate's measure for regression (classification uses the share of equal arg-max predictions): the share
    of the fp32 scores' variance the int8 scores reproduce. Shifts and rescaling count as errors, unlike Pearson's r.
    When the reference does not vary (one row), its squared magnitude is the scale instead.
    """
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    out = np.asarray(outputs, dtype=np.float64).reshape(-1)
    if ref.shape != out.shape or not np.isfinite(out).all():
        return 0.0
    error = float(np.sum((out - ref) ** 2))
    scale = float(np.sum((ref - ref.mean()) ** 2))
    if scale <= 1e-12 * max(float(np.sum(ref**2)), 1.0):
        scale = max(float(np.sum(ref**2)), 1e-12)
    return max(0.0, 1.0 - error / scale)


def headline(metrics: dict[str, Any] | None) -> tuple[str, float] | None:
    """(name, value) of the headline metric in a metrics dict: `accuracy`, else `pearson`; None when neither."""
    for name in (METRIC[CLASSIFICATION], METRIC[REGRESSION]):
        value = (metrics or {}).get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return name, float(value)
    return None


def format_metric(name: str, value: float) -> str:
    """`81.25%` for accuracy, `pearson 0.8123` for a correlation, `mse 0.4210` for an error."""
    return f"{100 * value:.2f}%" if name == "accuracy" else f"{name} {value:.4f}"
