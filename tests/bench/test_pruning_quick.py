"""bench/pruning.py end to end on a tiny checkpoint: every step, the targets, and the docs section it owns."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import onnx
import pytest

from bench import pruning, pruning_report
from compressor.errors import ConfigError
from tests.models import save_tiny_checkpoint, write_tiny_data

INTRO = "# Benchmarks\n\nWritten by hand: must survive.\n\n"
SST2 = "<!-- bench:sst2:start -->\nthe sst2 table, owned by bench/sst2.py\n<!-- bench:sst2:end -->\n"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One --quick run of main() on a tiny checkpoint, docs already holding another script's section; then a rerun."""
    tmp = tmp_path_factory.mktemp("pruning")
    argv = [
        "--model", str(save_tiny_checkpoint(tmp / "ckpt")),
        "--data", str(write_tiny_data(tmp / "train.tsv", 48)),
        "--eval-data", str(write_tiny_data(tmp / "validation.tsv", 16)),
        "--out", str(tmp / "out"),
        "--docs", str(tmp / "docs"),
        "--quick", "--seq-len", "32", "--quiet",
    ]  # fmt: skip
    docs = tmp / "docs"
    docs.mkdir()
    (docs / pruning_report.MARKDOWN).write_text(
        INTRO + SST2 + f"\n{pruning_report.START}\nstale numbers\n{pruning_report.END}\n", encoding="utf-8"
    )
    assert pruning.main(argv) == 0
    first = json.loads((docs / pruning_report.JSON_FILE).read_text(encoding="utf-8"))
    text = (docs / pruning_report.MARKDOWN).read_text(encoding="utf-8")
    assert pruning.main(argv) == 0
    again = json.loads((docs / pruning_report.JSON_FILE).read_text(encoding="utf-8"))
    return {"result": first, "again": again, "text": text, "docs": docs, "argv": argv}


def test_issue4_plans_and_uniform_reference(tiny_run: dict[str, Any]) -> None:
    r = tiny_run["result"]
    base = r["unpruned"]
    plans = r["issue4"]["plans"]
    assert list(plans) == list(pruning.PLAN_SCORERS)
    for plan in plans.values():
        assert 0.0 <= plan["accuracy"] <= 1.0 and plan["analyse_seconds"] > 0
        # the pruned model has what the plan predicted, near the params=0.6 budget
        assert plan["encoder_params"] == plan["predicted"]["params"]["after"]
        assert plan["encoder_params"] / base["encoder_params"] == pytest.approx(0.6, abs=0.02)
    uniform = r["issue4"]["uniform"]
    assert 0 < uniform["ffn"] < 1 and uniform["encoder_params"] < base["encoder_params"]
    # the uniform reference is the closest a per-layer fraction gets: within one FFN neuron per layer of the plan
    slack = 2 * (65 + 1)  # 2 layers × one neuron (2·hidden + 1 params) of rounding each side
    assert abs(uniform["encoder_params"] - plans["fisher"]["encoder_params"]) <= slack


def test_issue7_budgets_reconstruction_and_vocabulary(tiny_run: dict[str, Any]) -> None:
    r = tiny_run["result"]
    assert list(r["issue7"]) == list(pruning.FLOPS_BUDGETS)
    for budget, x in r["issue7"].items():
        want = float(budget.split("=")[1])
        kept = x["plan"]["predicted"]["flops"]["fraction"]
        assert kept == pytest.approx(want, abs=0.02)
        # the saved, reconstructed model has exactly the plan's FLOPs
        assert x["reconstruct"]["encoder_flops"] == x["plan"]["predicted"]["flops"]["after"]
        assert x["reconstruct"]["samples"] == 48  # all 48 training rows (quick asks for 64)
    vocab = r["exports"]["int8-vocab"]["vocab"]
    assert 0 < vocab["kept"] < vocab["source_size"] and 0.0 <= vocab["validation_unknown_rate"] <= 1.0
    # the vocabulary artifact's embedding holds only the kept rows (on a tiny model the id map and the unfused
    # embedding outweigh the rows saved, so the file size is not compared here)
    graph = onnx.load(str(Path(r["settings"]["out"]) / "export-int8-vocab" / "model.onnx")).graph
    rows = [i.dims[0] for i in graph.initializer if "word_embeddings" in i.name and len(i.dims) == 2]
    assert rows == [vocab["kept"]]


def test_issue8_export_gate_fusion_and_loaders(tiny_run: dict[str, Any]) -> None:
    r = tiny_run["result"]
    int8 = r["exports"]["int8"]
    assert int8["accuracy"]["samples"] == r["eval_rows"] == 16 and 0.0 <= int8["agreement"] <= 1.0
    assert int8["fusion"]["mode"] == "auto" and int8["fusion"]["choice"] in int8["fusion"]["timings_ms"]
    assert r["exports"]["fp32"]["quantization"]["mode"] == "none"
    assert set(r["artifacts"]) == {
        "fp32", "int8", "int8-vocab", "int8-vocab-nearest", "int8-small", "int8-small-vocab-nearest",
    }  # fmt: skip
    assert r["exports"]["int8-vocab-nearest"]["vocab"]["fallback"] == "nearest"
    assert all(a["eval_rows"] == 16 and a["p50_ms"] > 0 for a in r["artifacts"].values())
    loaders = r["loaders"]
    assert loaders["optimum"]["ok"] and loaders["predict"]["ok"], loaders
    assert loaders["agree"] and len(loaders["predict"]["labels"]) == pruning.PREDICT_SENTENCES
    assert set(loaders["predict"]["labels"]) <= {"negative", "positive"}


def test_docs_section_json_and_heatmap(tiny_run: dict[str, Any]) -> None:
    text, r = tiny_run["text"], tiny_run["result"]
    assert text.startswith(INTRO) and SST2 in text and "stale numbers" not in text
    assert text.count(pruning_report.START) == 1 and text.count(pruning_report.END) == 1
    assert r["command"] in text and r["machine"]["cpu"] in text and "1 thread(s)" in text
    assert f"{100 * r['unpruned']['accuracy']:.2f} %" in text and "Quick run" in text
    assert (tiny_run["docs"] / pruning_report.HEATMAP).read_bytes()[:8] == PNG


def test_rerun_reuses_every_step(tiny_run: dict[str, Any]) -> None:
    first, again = tiny_run["result"], tiny_run["again"]
    assert not any(s["cached"] for s in first["steps"].values())
    assert again["steps"].keys() == first["steps"].keys() and all(s["cached"] for s in again["steps"].values())
    assert again["issue4"] == first["issue4"] and again["issue7"] == first["issue7"]


def _target(result: dict[str, Any], issue: int, text: str) -> dict[str, Any]:
    return next(t for t in pruning_report.targets(result) if t["issue"] == issue and text in t["target"])


def test_targets_follow_the_numbers(tiny_run: dict[str, Any]) -> None:
    r = copy.deepcopy(tiny_run["result"])
    plans, art = r["issue4"]["plans"], r["artifacts"]
    plans["fisher"]["accuracy"], plans["magnitude"]["accuracy"] = 0.9, 0.8
    assert _target(r, 4, "`fisher` plan")["met"] is True
    plans["magnitude"]["accuracy"] = 0.9  # a tie is not "higher"
    assert _target(r, 4, "`fisher` plan")["met"] is False
    r["exports"]["int8"]["agreement"] = 0.99
    assert _target(r, 8, "agrees")["met"] is True
    r["exports"]["int8"]["agreement"] = 0.9899
    assert _target(r, 8, "agrees")["met"] is False
    art["fp32"]["accuracy"], art["int8"]["accuracy"] = 0.9, 0.897  # exactly 0.3 pt lost
    assert _target(r, 8, "loses")["met"] is True
    art["int8"]["accuracy"] = 0.8969
    assert _target(r, 8, "loses")["met"] is False
    r["exports"]["int8-vocab"]["model_bytes"] = int(0.6 * r["exports"]["int8"]["model_bytes"])
    assert _target(r, 7, "(unk, fisher flops=0.6 + reconstruct) cuts the artifact")["met"] is True
    r["exports"]["int8-vocab"]["model_bytes"] += 1
    assert _target(r, 7, "(unk, fisher flops=0.6 + reconstruct) cuts the artifact")["met"] is False
    small = r["exports"]["int8-small"]["model_bytes"]
    r["exports"]["int8-small-vocab-nearest"]["model_bytes"] = int(0.6 * small)  # its own base, not int8's
    assert _target(r, 7, "(nearest, fisher flops=0.4 + reconstruct) cuts")["met"] is True
    free = r["issue7"]["flops=0.7"]
    free["plan"]["analyse_seconds"], free["plan"]["prune_seconds"], free["reconstruct"]["reconstruct_seconds"] = (
        100.0, 1.0, 199.0,
    )  # fmt: skip
    assert _target(r, 7, "5 minutes")["met"] is False  # 300 s is not "under 5 minutes"
    assert _target(r, 7, "distillation")["met"] is None  # measured by bench/sst2.py, said so


def test_quick_defaults_and_bad_options(tmp_path: Path) -> None:
    ckpt = str(save_tiny_checkpoint(tmp_path / "ckpt"))
    cfg = pruning.parse_args(["--quick", "--model", ckpt, "--out", str(tmp_path / "q")])
    assert cfg.quick and cfg.docs == tmp_path / "q" / "docs" and cfg.plan_samples == pruning.QUICK["plan_samples"]
    full = pruning.parse_args(["--model", ckpt])
    assert full.docs == pruning.ROOT / "docs" and full.threads == 1 and full.reconstruct_samples == 1024
    with pytest.raises(ConfigError, match="model"):
        pruning.parse_args(["--model", str(tmp_path / "missing")])
    with pytest.raises(ConfigError, match="threads"):
        pruning.parse_args(["--model", ckpt, "--threads", "0"])
    assert pruning.main(["--model", str(tmp_path / "missing"), "--quiet"]) == 2
