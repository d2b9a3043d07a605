from __future__ import annotations

import pytest

from compressor.errors import ConfigError
from compressor.schema import config_from_dict, config_to_dict
from exporters.onnx.config import ExportConfig
from exporters.onnx.cpu import TARGETS, resolve_reduce_range


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantize", "int4"),
        ("fuse", "maybe"),
        ("gate", 1.5),
        ("gate", 0.0),
        ("eval_samples", 0),
        ("opset", 9),
        ("optimize_for", "sparc"),
        ("sparse_threshold", 0.0),
        ("max_length", 4),
        ("threads", 0),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`"):
        ExportConfig(**{field: value})


def test_config_round_trips_through_json() -> None:
    config = ExportConfig(quantize="static", fuse="off", per_channel=True, optimize_for="avx2", gate=0.98)
    assert config_from_dict(ExportConfig, config_to_dict(config)) == config


def test_reduce_range_comes_from_the_target_unless_set() -> None:
    assert resolve_reduce_range(None, "avx2")[0] is True
    assert resolve_reduce_range(None, "avx512-vnni")[0] is False
    assert resolve_reduce_range(None, "arm64")[0] is False
    assert resolve_reduce_range(False, "avx2") == (False, "set explicitly")
    assert set(TARGETS) == {"avx512-vnni", "avx2", "arm64"}


def test_optimize_for_is_recorded_and_sets_reduce_range(tokenizer, out_dir) -> None:
    from exporters.onnx.export import export_onnx
    from tests.exporters.onnx.conftest import fast_config
    from tests.models import tiny_model

    config = fast_config(fuse="off", reduce_range=None, optimize_for="avx2")
    report = export_onnx(tiny_model(), config, tokenizer=tokenizer, out_dir=out_dir)
    assert report.manifest["quantization"]["reduce_range"] is True
    assert report.manifest["quantization"]["optimize_for"] == "avx2"
    assert report.manifest["target"]["optimize_for"] == "avx2"
