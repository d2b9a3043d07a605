"""bench/stages.py: a finished stage is reused; a stage that really runs again makes its dependants stale."""

from __future__ import annotations

from pathlib import Path

from bench.stages import StageCache


def _writer(calls: list[str], name: str):
    def run(target: Path, resume: bool) -> dict:
        calls.append(name)
        target.mkdir(parents=True)
        (target / "out.txt").write_text(name, encoding="utf-8")
        return {"resume": resume}

    return run


def _pipeline(root: Path, calls: list[str], *, lr: float = 1e-4, rerun: tuple[str, ...] = ()) -> None:
    cache = StageCache(root, rerun=rerun)
    a = cache.run("a", {"lr": lr}, _writer(calls, "a"))
    cache.run("b", {"after": a.token}, _writer(calls, "b"))


def test_cached_stages_are_skipped_and_staleness_propagates(tmp_path: Path) -> None:
    calls: list[str] = []
    _pipeline(tmp_path, calls)
    assert calls == ["a", "b"] and (tmp_path / "a.done.json").is_file()
    _pipeline(tmp_path, calls)
    assert calls == ["a", "b"]  # nothing ran
    _pipeline(tmp_path, calls, lr=2e-4)  # a's config changed: a and b run
    assert calls == ["a", "b", "a", "b"]
    _pipeline(tmp_path, calls, lr=2e-4, rerun=("a",))  # same config, forced: b is stale because a ran again
    assert calls == ["a", "b", "a", "b", "a", "b"]


def test_missing_output_or_interrupted_stage_runs_again(tmp_path: Path) -> None:
    calls: list[str] = []
    _pipeline(tmp_path, calls)
    (tmp_path / "b" / "out.txt").unlink()
    (tmp_path / "b").rmdir()
    _pipeline(tmp_path, calls)
    assert calls == ["a", "b", "b"]

    cache = StageCache(tmp_path)

    def crash(target: Path, resume: bool) -> dict:
        raise KeyboardInterrupt

    try:
        cache.run("c", {"x": 1}, crash)
    except KeyboardInterrupt:
        pass
    assert (tmp_path / "c.pending.json").is_file() and not (tmp_path / "c.done.json").exists()
    record = cache.run("c", {"x": 1}, _writer(calls, "c"))
    assert record.result == {"resume": True}  # same config: the stage may resume its own partial work
    assert not (tmp_path / "c.pending.json").exists()
    assert StageCache(tmp_path).run("c", {"x": 2}, _writer(calls, "c")).result == {"resume": False}
