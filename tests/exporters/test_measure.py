"""`exporters.measure`: artifacts benchmarked side by side, interleaved, in one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compressor.data import load_data
from compressor.errors import ConfigError, DataError
from exporters.measure import BenchmarkConfig, benchmark, label_mapping, machine_info, plot
from exporters.runtime import Runtime
from tests.artifacts import build_tiny_artifact
from tests.models import write_tiny_data

FAST = dict(runs=6, warmup=2, seq_len=16, threads=1)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bench")
    # the second model is twice as deep and has a wider FFN: larger file, so ratios must differ from 1
    return [
        build_tiny_artifact(root / "small", seed=0),
        build_tiny_artifact(root / "large", seed=1, num_hidden_layers=4, intermediate_size=128),
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return load_data(write_tiny_data(tmp_path_factory.mktemp("data") / "d.tsv", n=30))


def _accuracy(path: Path, data) -> float:  # noqa: ANN001
    runtime = Runtime(path)
    predicted = runtime.logits(data.texts).argmax(axis=-1)
    return float((predicted == data.labels).mean())


def test_two_artifacts_report(artifacts: list[Path], data, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = BenchmarkConfig(**FAST, real_lengths=True, eval_batch_size=7)
    report = benchmark(artifacts, cfg, data=data)
    small, large = report.results
    assert [r.name for r in report.results] == ["small", "large"]
    assert small.speedup_p50 == 1.0 and small.size_ratio == 1.0 and small.accuracy_delta == 0.0
    assert large.size_ratio == pytest.approx(small.model_bytes / large.model_bytes)
    assert large.size_ratio < 1.0  # the reference is the smaller file
    assert large.speedup_p50 == pytest.approx(small.fixed.p50 / large.fixed.p50)
    for r, path in zip(report.results, artifacts, strict=True):
        assert r.model_bytes == (path / "model.onnx").stat().st_size
        assert r.accuracy == pytest.approx(_accuracy(path, data))  # batched streaming = one-shot
        assert r.eval_rows == 30
        assert r.fixed.runs == 6 and r.fixed.seq_len == 16 and r.fixed.batch == 1
        assert r.fixed.p50 <= r.fixed.p90 <= r.fixed.p99
        assert r.real is not None and r.real.seq_len == "real" and 3 <= r.real.tokens <= 16
    assert large.accuracy_delta == pytest.approx(100 * (large.accuracy - small.accuracy))
    assert report.machine["threads"] == 1

    report.write_json(tmp_path / "out" / "bench.json")
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert saved["config"]["runs"] == 6
    assert [r["name"] for r in saved["results"]] == ["small", "large"]
    assert saved["results"][1]["fixed"]["p50"] == large.fixed.p50
    plot(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_data_measures_latency_only(artifacts: list[Path], tmp_path: Path) -> None:
    report = benchmark(artifacts[:1], BenchmarkConfig(**FAST, batch=3))
    (only,) = report.results
    assert only.accuracy is None and only.real is None
    assert only.fixed.throughput == pytest.approx(3 * 1000 / only.fixed.mean)
    with pytest.raises(ConfigError, match="--data"):
        plot(report, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="real_lengths"):
        benchmark(artifacts[:1], BenchmarkConfig(**FAST, real_lengths=True))


def test_profile_splits_the_run_time_by_op_type(artifacts: list[Path], tmp_path: Path) -> None:
    report = benchmark(artifacts[:1], BenchmarkConfig(**FAST, profile=True))
    profile = report.results[0].profile
    assert profile and "MatMul" in profile
    assert sum(op["share"] for op in profile.values()) == pytest.approx(1.0, abs=1e-3)
    times = [op["ms_per_run"] for op in profile.values()]
    assert times == sorted(times, reverse=True) and all(t >= 0 for t in times)  # largest first
    report.write_json(tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["results"][0]["profile"] == profile
    assert benchmark(artifacts[:1], BenchmarkConfig(**FAST)).results[0].profile is None  # off by default


def test_eval_rows_caps_the_accuracy_pass(artifacts: list[Path], data) -> None:  # noqa: ANN001
    report = benchmark(artifacts[:1], BenchmarkConfig(**FAST, eval_rows=5), data=data)
    assert report.results[0].eval_rows == 5
    assert report.results[0].accuracy == pytest.approx(_accuracy(artifacts[0], data.head(5)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threads", 0),
        ("batch", 0),
        ("runs", 0),
        ("warmup", -1),
        ("seq_len", 1),
        ("eval_batch_size", 0),
        ("eval_rows", 0),
    ],
)
def test_config_validation_names_the_field(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=field):
        BenchmarkConfig(**{field: value})


def test_seq_len_beyond_positions_is_an_error(artifacts: list[Path]) -> None:
    with pytest.raises(ConfigError, match="seq_len"):
        benchmark(artifacts[:1], BenchmarkConfig(runs=1, warmup=0, seq_len=65))  # tiny models have 64 positions


def test_label_mapping() -> None:
    model = {0: "negative", 1: "positive"}
    assert label_mapping({0: "positive", 1: "negative"}, model, "d") == {0: 1, 1: 0}  # by name
    assert label_mapping({0: "0", 1: "1"}, model, "d") == {0: 0, 1: 1}  # SST-2's integer labels
    with pytest.raises(DataError, match="neutral"):
        label_mapping({0: "neutral", 1: "positive"}, model, "d")


def test_machine_info_records_cpu() -> None:
    info = machine_info(2)
    assert info["threads"] == 2 and info["logical_cores"] >= 1
    assert isinstance(info["cpu_flags"], list) and info["cpu"]


def test_runs_are_interleaved_round_robin() -> None:
    from exporters.measure import _interleaved

    calls: list[str] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        def run_feed(self, feed: dict) -> None:
            calls.append(self.name)

    fakes = [Fake("a"), Fake("b"), Fake("c")]
    times = _interleaved(fakes, [[{}]] * 3, BenchmarkConfig(runs=2, warmup=1), desc="t")
    assert [len(t) for t in times] == [2, 2, 2]  # warm-up rounds are not timed
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # every round runs all, starting one later


def test_profile_table_sets_artifacts_side_by_side() -> None:
    from exporters.measure import profile_table

    dense = {
        "MatMul": {"ms_per_run": 3.0, "share": 0.6},
        "Add": {"ms_per_run": 1.5, "share": 0.3},
        "Gelu": {"ms_per_run": 0.5, "share": 0.1},
    }
    small = {"MatMulInteger": {"ms_per_run": 0.8, "share": 0.8}, "Add": {"ms_per_run": 0.2, "share": 0.2}}
    headers, rows = profile_table([("dense", dense), ("no profile", None), ("small", small)], top=2)
    assert headers == ["op type", "dense", "small"]  # an artifact without a profile gets no column
    assert [r[0] for r in rows] == ["MatMul", "Add", "other", "all nodes"]  # the 2 largest summed over artifacts
    assert rows[0] == ["MatMul", "3.00 (60%)", "-"]
    assert rows[2] == ["other", "0.50 (10%)", "0.80 (80%)"]
    assert rows[3] == ["all nodes", "5.00 (100%)", "1.00 (100%)"]


def test_the_fixed_feed_is_seq_len_real_tokens_unless_asked_to_pad(artifacts: list[Path], data) -> None:  # noqa: ANN001
    from exporters.measure import fixed_rows

    runtime = Runtime(artifacts[0])
    rows = fixed_rows(data.texts, 3, seq_len=16, fill=True)
    assert [r.split(" ")[: len(t.split(" "))] for r, t in zip(rows, data.texts, strict=False)] == [
        t.split(" ") for t in data.texts[:3]
    ]  # row i starts at sentence i
    feed = runtime.encode(rows, pad_to=16)
    assert feed["input_ids"].shape == (3, 16) and feed["attention_mask"].all()  # no padding left
    padded = runtime.encode(fixed_rows(data.texts, 3, seq_len=16, fill=False), pad_to=16)
    assert not padded["attention_mask"].all()  # the tiny data's sentences are shorter than 16 tokens
    assert len(fixed_rows(["", ""], 2, seq_len=16, fill=True)) == 2  # ends on empty texts
    with pytest.raises(ConfigError, match="at least one text"):
        fixed_rows([], 1, seq_len=16, fill=True)
    report = benchmark(artifacts[:1], BenchmarkConfig(**FAST, fill=False), data=data)
    assert report.config.fill is False


def test_sessions_flush_denormals_only_when_asked(artifacts: list[Path]) -> None:
    # a masked attention score's softmax output is denormal: the flush makes it fast, but it also sets the calling
    # thread's FTZ/DAZ flags for the rest of the process, so it is opt-in
    from exporters.runtime import DENORMAL_AS_ZERO, session_options

    def flag(session) -> str | None:  # noqa: ANN001
        return session.get_session_options().get_session_config_entry(DENORMAL_AS_ZERO)

    with pytest.raises(RuntimeError):  # not set at all by default
        session_options(1).get_session_config_entry(DENORMAL_AS_ZERO)
    assert session_options(1, flush_denormals=True).get_session_config_entry(DENORMAL_AS_ZERO) == "1"
    assert BenchmarkConfig().flush_denormals is False
    with pytest.raises(RuntimeError):
        flag(Runtime(artifacts[0], threads=1).session)
    # a session with the flush sets this thread's flags for good: build it in another process
    code = (
        "import sys; from exporters.runtime import Runtime, DENORMAL_AS_ZERO; "
        "s = Runtime(sys.argv[1], threads=1, flush_denormals=True).session; "
        "print(s.get_session_options().get_session_config_entry(DENORMAL_AS_ZERO))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(artifacts[0])], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1"


def test_without_data_the_fixed_feed_is_varied_text(artifacts: list[Path], monkeypatch) -> None:  # noqa: ANN001
    """No --data: the feed joins the built-in sentences (a varied vocabulary, as real text looks up), not one
    phrase repeated, which would look up the same few embedding rows over and over."""
    from exporters import measure
    from exporters.measure import BUILTIN_SENTENCES, fixed_rows

    row = fixed_rows(list(BUILTIN_SENTENCES), 1, seq_len=128, fill=True)[0]
    assert len(set(row.lower().split())) >= 100
    seen: list[list[str]] = []
    original = measure.fixed_rows
    monkeypatch.setattr(
        measure, "fixed_rows", lambda texts, *a, **k: seen.append(list(texts)) or original(texts, *a, **k)
    )
    benchmark(artifacts[:1], BenchmarkConfig(**FAST))
    assert seen == [list(BUILTIN_SENTENCES)]
