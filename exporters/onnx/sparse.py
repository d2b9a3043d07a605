"""Sparse storage of mostly-zero weights: a smaller file, not a faster model.

ONNX `sparse_initializer`s hold only the non-zero values and their linear indices (int64, as the ONNX checker
requires). ONNX Runtime turns them back into dense tensors when it loads the model, so unstructured zeros give
no CPU speed-up; the gain is the artifact's size. A tensor is stored sparsely only when that is smaller:
with 8-byte indices, fp32 weights need about 2/3 zeros and int8 weights about 8/9.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

logger = logging.getLogger(__name__)

MIN_ELEMENTS = 1024  # smaller tensors are not worth the bookkeeping
NOTE = "size gain only: ONNX Runtime densifies sparse initializers when it loads the model (no CPU speed-up)"


@dataclass
class SparseReport:
    threshold: float
    tensors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dense_bytes(self) -> int:
        return sum(t["dense_bytes"] for t in self.tensors)

    @property
    def stored_bytes(self) -> int:
        return sum(t["stored_bytes"] for t in self.tensors)

    def describe(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "tensors": self.tensors,
            "dense_bytes": self.dense_bytes,
            "stored_bytes": self.stored_bytes,
            "note": NOTE,
        }


def sparsify_(model: onnx.ModelProto, threshold: float, *, min_elements: int = MIN_ELEMENTS) -> SparseReport:
    """Move initializers with at least `threshold` zeros into `sparse_initializer`, where that is smaller."""
    report = SparseReport(threshold)
    graph = model.graph
    keep = []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.size < min_elements or array.dtype.kind not in "fiu":
            keep.append(init)
            continue
        flat = array.reshape(-1)
        nonzero = np.flatnonzero(flat)  # ascending linear indices, as the ONNX spec requires
        zero_fraction = 1.0 - nonzero.size / flat.size
        dense_bytes = int(array.nbytes)
        stored_bytes = int(nonzero.size * (array.itemsize + 8))
        if zero_fraction < threshold or stored_bytes >= dense_bytes:
            keep.append(init)
            continue
        values = numpy_helper.from_array(flat[nonzero], init.name)
        indices = numpy_helper.from_array(nonzero.astype(np.int64), f"{init.name}_indices")
        graph.sparse_initializer.append(onnx.helper.make_sparse_tensor(values, indices, list(array.shape)))
        report.tensors.append(
            {
                "name": init.name,
                "zero_fraction": round(zero_fraction, 4),
                "dense_bytes": dense_bytes,
                "stored_bytes": stored_bytes,
            }
        )
    if report.tensors:
        del graph.initializer[:]
        graph.initializer.extend(keep)
        logger.info(
            "stored %d mostly-zero tensors sparsely: %.1f MB → %.1f MB (%s)",
            len(report.tensors),
            report.dense_bytes / 1e6,
            report.stored_bytes / 1e6,
            NOTE,
        )
    return report


def densify(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """The dense array a sparse initializer stands for."""
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dense = np.zeros(int(np.prod(sparse.dims)), dtype=values.dtype)
    if indices.ndim == 2:  # (nnz, rank) coordinates instead of linear indices
        indices = np.ravel_multi_index(indices.T, tuple(sparse.dims))
    dense[indices] = values
    return dense.reshape(tuple(sparse.dims))


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every weight of the graph as a dense array, whether stored dense or sparse."""
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    arrays.update({sp.values.name: densify(sp) for sp in model.graph.sparse_initializer})
    return arrays
