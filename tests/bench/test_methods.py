from __future__ import annotations

from pathlib import Path

import pytest

from bench import methods
from compressor.errors import ConfigError


def test_learning_rates_and_run_directories_name_the_budget(tmp_path: Path) -> None:
    assert [methods.lr_text(x) for x in (2e-3, 5e-5, 1e-2, 3e-2)] == ["2e-3", "5e-5", "1e-2", "3e-2"]
    ref = methods.parse_args(["--out", str(tmp_path)])
    assert methods.run_dir(ref, "lora", 2e-3) == tmp_path / "lora-2e-3"
    assert methods.budget_tag(ref) == "" and methods.markers("") == (methods.START, methods.END)
    longer = methods.parse_args(["--out", str(tmp_path), "--epochs", "2", "--defaults-only", "--methods", "hiwi"])
    assert longer.methods == ["full", "hiwi"]  # the baseline is always run
    assert methods.run_dir(longer, "hiwi", 1e-2) == tmp_path / "hiwi-1e-2-8000rows-2ep"  # never mixed with 1 epoch
    assert methods.budget_tag(longer) == "-8000rows-2ep-defaults"
    from compressor.methods import METHODS

    assert methods.lrs(longer, "hiwi") == (METHODS.get("hiwi").default_lr,)
    assert methods.lrs(ref, "hiwi") == methods.GRID["hiwi"]


def test_every_registered_method_has_a_grid_that_holds_its_default() -> None:
    from compressor.methods import METHODS

    assert set(methods.GRID) == set(METHODS.names())
    for name in METHODS.names():
        assert METHODS.get(name).default_lr in methods.GRID[name], name


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown method 'qlora'"):
        methods.parse_args(["--methods", "qlora"])
    with pytest.raises(ConfigError, match="must be positive"):
        methods.parse_args(["--epochs", "0"])


def test_render_marks_methods_within_the_target() -> None:
    row = {"trainable_parameters": 10, "total_parameters": 1000, "train_seconds": 5.0, "adapter_bytes": 2000}

    def summary(method: str, lr: float, acc: float, default: float) -> dict:
        delta = 100 * (acc - 0.84)
        return {"method": method, "best_lr": lr, "best_accuracy": acc, "delta_pt": delta, "default_lr": default,
                "within": delta >= -1.5}  # fmt: skip

    result = {
        "command": "python bench/methods.py",
        "date": "2026-11-26",
        "machine": {"cpu": "CPU", "cores": 2},
        "budget": {"train_samples": 8000, "epochs": 1.0, "batch_size": 32, "seed": 42},
        "baseline_accuracy": 0.84,
        "rows": [
            row | {"method": "full", "lr": 5e-5, "accuracy": 0.84},
            row | {"method": "dsee", "lr": 2e-3, "accuracy": 0.83},
        ],
        "methods": [
            summary("full", 5e-5, 0.84, 5e-5),
            summary("dsee", 2e-3, 0.83, 2e-3),
            summary("hiwi", 1e-2, 0.80, 3e-3),
        ],
    }
    text = methods.render(result)
    assert text.startswith(methods.START) and text.rstrip().endswith(methods.END)
    assert "| dsee | 2e-3 | 83.00 % | -1.00 | yes |" in text
    assert "| hiwi | 1e-2 (default 3e-3) | 80.00 % | -4.00 | **no** |" in text
    tagged = methods.render(result | {"defaults_only": True}, "-8000rows-2ep-defaults")
    assert tagged.startswith("<!-- bench:methods-8000rows-2ep-defaults:start -->") and "not tuned again" in tagged
