from __future__ import annotations

import pytest

from compressor.errors import ConfigError
from compressor.schema import build_config
from compressor.sensitivity.config import SCORER_NAMES, AnalyseConfig, Budget, parse_budget
from compressor.sensitivity.scorers import SCORERS


def test_scorer_names_match_the_registry() -> None:
    assert (
        set(SCORER_NAMES) == set(SCORERS.names()) == {"head-gradient", "taylor", "tensor-loss", "fisher", "magnitude"}
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("params=0.6", Budget("params", 0.6)),
        ("flops=0.5", Budget("flops", 0.5)),
        ("latency-ms=4", Budget("latency", 4.0)),
        (" PARAMS=1 ", Budget("params", 1.0)),
    ],
)
def test_budgets_parse(text: str, expected: Budget) -> None:
    assert parse_budget(text) == expected
    assert parse_budget(str(expected)) == expected  # str() round-trips


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("params=1.5", r"params is the fraction kept and must be in \(0, 1\]; got 1.5"),
        ("params=0", "must be in"),
        ("flops=-0.2", "must be in"),
        ("params=0.6,flops=0.5", r"exactly one of .*got 2 \(params, flops\)"),
        ("params=0.6 latency-ms=3", "exactly one of"),
        ("heads=0.5", "unknown key `heads`"),
        ("latency-ms=0", "must be positive"),
        ("params", "KEY=VALUE"),
        ("params=abc", "needs a number"),
        ("params=nan", "finite"),
        ("", "empty"),
    ],
)
def test_bad_budgets_give_one_line_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        parse_budget(text)
    assert "\n" not in str(err.value) and "`budget`" in str(err.value)


def test_config_validates_each_field() -> None:
    assert AnalyseConfig().budget == "params=0.6"
    assert AnalyseConfig(budget="none").budget is None
    assert AnalyseConfig(budget="latency_ms=5").parsed_budget == Budget("latency", 5.0)
    with pytest.raises(ConfigError, match="`scorer` must be one of"):
        AnalyseConfig(scorer="random")
    with pytest.raises(ConfigError, match="`budget`"):
        AnalyseConfig(budget="params=1.5")
    with pytest.raises(ConfigError, match="`samples`"):
        AnalyseConfig(samples=0)
    with pytest.raises(ConfigError, match="`min_heads`"):
        AnalyseConfig(min_heads=-1)
    with pytest.raises(ConfigError, match="`density`"):
        AnalyseConfig(density=1.0)
    with pytest.raises(ConfigError, match="unknown key `heads`"):
        build_config(AnalyseConfig, {"heads": 3})
