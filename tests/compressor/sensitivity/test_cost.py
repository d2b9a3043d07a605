from __future__ import annotations

import pytest

from compressor.arch.parts import count_parameters
from compressor.arch.surgery import drop_layers_, prune_ffn_, prune_heads_
from compressor.sensitivity.cost import analytic_costs, encoder_flops, encoder_params, layer_shapes
from tests.models import tiny_model


def _pruned():
    model = tiny_model(num_hidden_layers=3)
    prune_heads_(model, 0, [1, 2])
    prune_heads_(model, 1, [])
    prune_ffn_(model, 1, [3, 7])
    prune_ffn_(model, 2, [])
    return model


@pytest.mark.parametrize("build", [tiny_model, _pruned], ids=["unpruned", "pruned"])
def test_param_cost_model_counts_the_encoder_exactly(build) -> None:  # noqa: ANN001
    model = build()
    assert encoder_params(model) == count_parameters(model, encoder_only=True)


def test_layer_shapes_read_the_modules_and_source_ids() -> None:
    model = _pruned()
    drop_layers_(model, [1, 2])
    shapes = layer_shapes(model)
    assert [(s.index, s.source, s.heads, s.neurons) for s in shapes] == [(0, 1, 0, 2), (1, 2, 4, 0)]
    assert shapes[1].head_ids == (0, 1, 2, 3)


def test_flops_scale_with_units_and_sequence_length() -> None:
    model = tiny_model()
    costs = analytic_costs(model, "flops", seq_len=64)
    assert encoder_flops(model, 64) == 2 * costs.layer_cost(4, 37)
    # attention scores grow with seq², the rest linearly: doubling seq_len more than doubles a head's FLOPs
    assert analytic_costs(model, "flops", seq_len=128).head > 2 * costs.head
    assert analytic_costs(model, "flops", seq_len=128).neuron == 2 * costs.neuron
    assert encoder_flops(_pruned(), 64) < encoder_flops(tiny_model(num_hidden_layers=3), 64)
