"""Checks on real sentences: fp32 parity with PyTorch, int8 agreement with fp32, accuracy when labels exist."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compressor.errors import ParityError
from compressor.task import fidelity, regression_metrics
from exporters.measure import BUILTIN_SENTENCES
from exporters.onnx.sessions import Feed, make_session, run_logits

logger = logging.getLogger(__name__)

PARITY_ROWS = 64  # parity runs PyTorch too, so it uses the first rows of the sample only


@dataclass
class EvalSample:
    """The sentences every check runs on, with labels (as model ids) when known."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[int] | list[float] | None  # class ids, or a regression's scores
    source: str
    regression: bool = False

    def __len__(self) -> int:
        return len(self.texts)


def eval_sample(
    eval_data: Any | None, calibration_texts: Sequence[str] | None, n: int, id2label: dict[int, str]
) -> EvalSample:
    """Eval-data rows (a fixed-seed sample of `n`), else calibration text, else the built-in sentences."""
    if eval_data is not None:
        data = eval_data.sample(n, seed=0)
        if data.is_regression:
            return EvalSample(data.texts, data.text_pairs, list(data.labels), str(data.path), regression=True)
        return EvalSample(data.texts, data.text_pairs, model_label_ids(data, id2label), str(data.path))
    if calibration_texts:
        return EvalSample(list(calibration_texts)[:n], None, None, "calibration text")
    return EvalSample(list(BUILTIN_SENTENCES)[:n], None, None, "built-in sentences")


def model_label_ids(data: Any, id2label: dict[int, str]) -> list[int] | None:
    """The data's labels as the model's class ids: by label name, or by integer when names are generic."""
    model_names = {str(v): int(k) for k, v in id2label.items()}
    data_names = {int(k): str(v) for k, v in data.id2label.items()}
    if set(data_names.values()) <= set(model_names):
        return [model_names[data_names[y]] for y in data.labels]
    if all(v.lstrip("-").isdigit() for v in data_names.values()):
        values = {int(v) for v in data_names.values()}
        if values <= {int(k) for k in id2label}:
            return [int(data_names[y]) for y in data.labels]
    logger.warning(
        "labels of %s (%s) do not match the model's (%s): accuracy is not reported, only agreement",
        data.path,
        ", ".join(sorted(data_names.values())),
        ", ".join(model_names),
    )
    return None


def torch_logits(model: torch.nn.Module, feeds: Sequence[Feed]) -> np.ndarray:
    """PyTorch logits for the same feeds the ONNX graph gets: (rows, num_labels)."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for feed in feeds:
            inputs = {k: torch.from_numpy(v).to(device) for k, v in feed.items()}
            out.append(model(**inputs).logits.float().cpu().numpy())
    return np.concatenate(out, axis=0)


def check_parity(reference: np.ndarray, onnx_path: Path, feeds: Sequence[Feed], *, atol: float, what: str) -> float:
    """max |Δlogit| of the graph against PyTorch's `reference` logits; ParityError above `atol`."""
    logits = run_logits(make_session(onnx_path), feeds)
    diff = max_abs_diff(reference, logits)
    if not diff <= atol:  # also catches NaN
        raise ParityError(
            f"{what} logits differ from PyTorch by max |Δlogit| = {diff:.3g} on {len(logits)} sentences "
            f"(allowed {atol:g}); the exported graph does not reproduce the model"
        )
    logger.info("%s parity: max |Δlogit| = %.2g on %d sentences", what, diff, len(logits))
    return diff


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def agreement(reference: np.ndarray, logits: np.ndarray) -> float:
    """Share of rows whose predicted class is the same; for one-output regression, the R² of the scores against
    the reference's (`compressor.task.fidelity`: the share of the reference scores' variance reproduced)."""
    if reference.ndim == 2 and reference.shape[-1] == 1:
        return fidelity(reference, logits)
    return float(np.mean(reference.argmax(axis=-1) == logits.argmax(axis=-1)))


def accuracy(logits: np.ndarray, labels: Sequence[int]) -> float:
    return float(np.mean(logits.argmax(axis=-1) == np.asarray(labels)))


def quality(logits: np.ndarray, sample: EvalSample) -> dict[str, float]:
    """The sample's metrics of these outputs: `accuracy`, or a regression's pearson, spearman and mse."""
    if sample.regression:
        return regression_metrics(logits, sample.labels or [])
    return {"accuracy": accuracy(logits, sample.labels or [])}
