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
        "budget": {"train_samples": 8000, "epochs": 1.0, "batch_size": 32, "seeds": [42]},
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


def test_seeds_name_their_runs_and_methods_are_judged_on_the_mean(tmp_path: Path) -> None:
    args = methods.parse_args(["--out", str(tmp_path), "--defaults-only", "--methods", "hiwi", "--seeds", "44,42,43"])
    assert args.seeds == [42, 43, 44]
    assert methods.run_dir(args, "hiwi", 3e-3, 42) == tmp_path / "hiwi-3e-3"  # the reference seed keeps its cache
    assert methods.run_dir(args, "hiwi", 3e-3, 43) == tmp_path / "hiwi-3e-3-s43"
    assert "--seed 43" in " ".join(methods.finetune_command(args, "hiwi", 3e-3, 43))
    assert methods.budget_tag(args) == "-8000rows-1ep-defaults-3seeds"
    with pytest.raises(ConfigError, match="--seeds must be comma-separated integers"):
        methods.parse_args(["--seeds", "42,x"])

    sizes = {"trainable_parameters": 10, "total_parameters": 1000, "train_seconds": 5.0, "adapter_bytes": 2000}
    accuracy = {("full", 42): 0.84, ("full", 43): 0.86, ("hiwi", 42): 0.80, ("hiwi", 43): 0.84}
    rows = [sizes | {"method": m, "lr": 1e-2, "seed": s, "accuracy": a} for (m, s), a in accuracy.items()]
    settings = methods.aggregate(rows)
    assert [round(s["accuracy"], 6) for s in settings] == [0.85, 0.82]
    assert settings[1]["seed_accuracies"] == {42: 0.80, 43: 0.84}

    summary = {"method": "hiwi", "best_lr": 1e-2, "best_accuracy": 0.82, "best_seed_accuracies": {42: 0.8, 43: 0.84},
               "delta_pt": -3.0, "default_lr": 1e-2, "within": False}  # fmt: skip
    result = {
        "command": "python bench/methods.py --seeds 42,43",
        "date": "2026-11-26",
        "machine": {"cpu": "CPU", "cores": 2},
        "budget": {"train_samples": 8000, "epochs": 1.0, "batch_size": 32, "seeds": [42, 43]},
        "baseline_accuracy": 0.85,
        "rows": rows,
        "methods": [summary | {"method": "full"}, summary],
        "defaults_only": True,
    }
    text = methods.render(result, "-8000rows-1ep-defaults-2seeds")
    assert ", 2 seeds (issues 5, 6)" in text and "judged on its mean" in text
    assert "| hiwi | 1e-2 | 43 | 84.00 % | -2.00 |" in text  # each run against full at the same seed
    assert "| hiwi | 1e-2 | 82.00 % (80.00 / 84.00) | -3.00 | **no** |" in text


def test_a_cached_run_with_other_options_than_the_defaults_is_refused(tmp_path: Path) -> None:
    import json

    from compressor.methods import METHODS
    from compressor.schema import config_to_dict

    current = config_to_dict(METHODS.get("hiwi").config_cls())
    (tmp_path / "method.json").write_text(json.dumps(current))
    methods.check_current(tmp_path, "hiwi")  # today's defaults: reused
    stale = current | {"fields": current["fields"] | {"targets": ["in_bias"], "bottleneck": 2}}
    (tmp_path / "method.json").write_text(json.dumps(stale))
    with pytest.raises(ConfigError, match=r"other hiwi options than today's defaults \(bottleneck, targets\)"):
        methods.check_current(tmp_path, "hiwi")


def test_options_resolved_at_run_time_do_not_make_a_run_stale(tmp_path: Path) -> None:
    import json

    from compressor.methods import METHODS
    from compressor.schema import config_to_dict

    saved = config_to_dict(METHODS.get("pruning-adapter").config_cls())
    saved["fields"]["high_rank_layers"] = [0, 5]  # the default [] means "pick them from the data"
    (tmp_path / "method.json").write_text(json.dumps(saved))
    methods.check_current(tmp_path, "pruning-adapter")
