from __future__ import annotations

import math
from pathlib import Path

import pytest

from compressor.sensitivity import latency as latency_module
from compressor.sensitivity.latency import latency_table, measure_latency_table
from tests.models import tiny_model


def test_latency_table_is_measured_once_then_read_from_the_cache(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    model = tiny_model()
    table = latency_table(model, seq_len=8, threads=1, cache_dir=tmp_path, repeats=2)
    values = (table.base_ms, table.per_layer_ms, table.per_head_ms, table.per_neuron_ms)
    assert all(math.isfinite(v) and v >= 0 for v in values) and table.per_head_ms > 0 and table.per_neuron_ms > 0
    assert table.key["hidden_size"] == 32 and table.key["threads"] == 1 and table.key["seq_len"] == 8
    assert len(list(tmp_path.glob("latency-*.json"))) == 1

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(latency_module, "measure_latency_table", fail)
    assert latency_table(model, seq_len=8, threads=1, cache_dir=tmp_path) == table
    with pytest.raises(AssertionError, match="measured again"):  # another thread count is another table
        latency_table(model, seq_len=8, threads=2, cache_dir=tmp_path)


def test_costs_come_from_the_table() -> None:
    table = measure_latency_table(tiny_model(), seq_len=8, threads=1, repeats=1)
    costs = table.costs()
    assert (costs.head, costs.neuron, costs.layer, costs.base) == (
        table.per_head_ms,
        table.per_neuron_ms,
        table.per_layer_ms,
        table.base_ms,
    )
