"""The weight average (`ema`): the recurrence it keeps, the weights a run ends with, and a resumed run that ends
exactly where an uninterrupted one does."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from compressor.data import load_data
from compressor.errors import CompressorError, ConfigError
from compressor.prune.config import PruneConfig
from compressor.train.config import TrainConfig
from compressor.train.loop import EMA_FILE, WeightAverage, train
from tests.models import tiny_model, tiny_tokenizer, write_tiny_data


class Stop(Exception):
    """Stands for a run killed part of the way."""


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def run(tmp_path: Path, work: str, *, ema: float, on_step=None, resume: bool = False, model=None, results=None):  # noqa: ANN001, ANN201
    data = load_data(write_tiny_data(tmp_path / "train.tsv", 32))
    eval_data = load_data(write_tiny_data(tmp_path / "val.tsv", 12)) if results is not None else None
    cfg = TrainConfig(max_steps=6, batch_size=8, lr=1e-3, seed=0, save_steps=2, logging_steps=1, ema=ema)
    model = model if model is not None else tiny_model()
    tok = tiny_tokenizer(tmp_path / "tok")
    result = train(
        model,
        tok,
        cfg,
        data=data,
        eval_data=eval_data,
        work_dir=tmp_path / work,
        quiet=True,
        on_step=on_step,
        resume=resume,
    )
    if results is not None:
        results.append(result.metrics)
    return model


def test_the_average_follows_its_recurrence_over_trained_parameters_only() -> None:
    model = tiny_model()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    average = WeightAverage(model, share=0.5)
    average.start(4)  # decay 1 - 1/(0.5 * 4) = 0.5
    assert average.decay == pytest.approx(0.5)
    assert "bert.embeddings.word_embeddings.weight" not in average.names
    start = weights(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update()
    average.apply()
    after = weights(model)
    for name, value in after.items():
        if name == "bert.embeddings.word_embeddings.weight":
            torch.testing.assert_close(value, start[name] + 1.0)  # frozen: not averaged, left as it is
        else:
            torch.testing.assert_close(value, start[name] + 0.5)


def test_a_run_ends_with_the_average_of_its_steps(tmp_path: Path) -> None:
    seen: list[dict[str, torch.Tensor]] = []
    plain, metrics = tiny_model(), []
    run(
        tmp_path,
        "plain",
        ema=0.0,
        on_step=lambda done, total: seen.append(weights(plain)),
        model=plain,
        results=metrics,
    )
    trajectory = [*seen[1:], weights(plain)]  # the weights after each of the 6 steps
    assert len(trajectory) == 6
    averaged = run(tmp_path, "avg", ema=0.5, results=metrics)  # decay 1 - 1/3
    # the averaged run also scores its last step's weights: the same as the plain run's final ones
    assert metrics[1]["last_step_eval_loss"] == pytest.approx(metrics[0]["eval_loss"], rel=1e-5)
    assert "last_step_eval_loss" not in metrics[0]
    assert metrics[1]["eval_loss"] != pytest.approx(metrics[0]["eval_loss"], rel=1e-6)  # the average's own
    decay = 1 - 1 / 3
    for name, value in weights(averaged).items():
        expected = seen[0][name].clone()
        for step in trajectory:
            expected = decay * expected + (1 - decay) * step[name]
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    moved = [n for n, v in weights(averaged).items() if not torch.allclose(v, trajectory[-1][n])]
    assert moved, "the averaged weights should differ from the last step's"


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    whole = weights(run(tmp_path, "whole", ema=0.5))

    def crash(done: int, total: int) -> None:
        if done == 3:  # after the checkpoint of step 2
            raise Stop

    with pytest.raises(Stop):
        run(tmp_path, "cut", ema=0.5, on_step=crash)
    checkpoint = tmp_path / "cut" / "checkpoints" / "checkpoint-2"
    assert sorted(load_file(str(checkpoint / EMA_FILE))) == sorted(
        n for n, p in tiny_model().named_parameters() if p.requires_grad
    )
    starts: list[int] = []
    resumed = weights(run(tmp_path, "cut", ema=0.5, resume=True, on_step=lambda done, total: starts.append(done)))
    assert starts[0] == 2  # it did resume from the checkpoint, not start again
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_without_an_average_restarts_it_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def crash(done: int, total: int) -> None:
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        run(tmp_path, "cut", ema=0.0, on_step=crash)
    with caplog.at_level(logging.WARNING, logger="compressor.train.loop"):
        run(tmp_path, "cut", ema=0.5, resume=True)
    assert any("holds no weight average" in r.getMessage() for r in caplog.records)


def test_an_average_of_other_parameters_is_refused(tmp_path: Path) -> None:
    model = tiny_model()
    average = WeightAverage(model, share=0.5)
    path = tmp_path / EMA_FILE
    save_file({"other.weight": torch.zeros(2)}, str(path))
    with pytest.raises(CompressorError, match="averages other parameters than this run trains"):
        average.load(path)
    average.save(path)
    state = load_file(str(path))
    name = average.names[0]
    state[name] = torch.zeros(3, 3)
    save_file(state, str(path))
    with pytest.raises(CompressorError, match=f"`{name}` has shape"):
        average.load(path)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, True, "0.2"])
def test_a_share_outside_zero_to_one_is_refused(value: object) -> None:
    for build in (lambda: TrainConfig(ema=value), lambda: PruneConfig(heads=0.5, ema=value)):
        with pytest.raises(ConfigError, match=r"`ema` must be a share of the steps in \[0, 1\)"):
            build()
