"""The convergence rule: stop when the last 20% of a validation curve gained nothing beyond its scatter,
and a run stopped by it stops at the same iteration whether or not it was interrupted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mamlbook.train.convergence import fit_until_converged, plateau, validation_curve
from mamlbook.train.runconfig import TrainConfig
from mamlbook.train.trainer import Trainer


def test_a_rising_curve_has_not_converged_and_a_flat_noisy_one_has():
    rng = np.random.default_rng(0)
    rising = np.linspace(0.5, 0.9, 40) + 0.01 * rng.standard_normal(40)
    flat = 0.8 + 0.02 * rng.standard_normal(40)
    assert not plateau(rising).converged and plateau(rising).gain > 0.05
    verdict = plateau(flat)
    assert verdict.converged and verdict.window == 8 and verdict.p_value >= 0.05
    # a flat curve is called "still rising" by chance, more often than alpha (the earlier window's noise is
    # not counted: the rule errs towards training on), but rarely; a tiny trend without scatter is a gain
    still_rising = np.mean([not plateau(0.8 + 0.05 * rng.standard_normal(40)).converged for _ in range(400)])
    assert 0.03 < still_rising < 0.2
    trend = np.linspace(0.80, 0.81, 40)
    assert not plateau(trend + 1e-5 * rng.standard_normal(40)).converged


def test_a_steep_early_rise_does_not_pass_for_noise():
    """The curve that a two-sample test stopped: the window before still holds the fast rise."""
    curve = [0.696, 0.816, 0.848, 0.872, 0.888, 0.888, 0.88, 0.892, 0.896, 0.896]
    verdict = plateau(curve, min_points=5)
    assert not verdict.converged and verdict.gain > 0.05 and verdict.p_value < 0.01


def test_short_constant_and_bad_curves():
    assert not plateau([0.5, 0.6, 0.7]).converged, "fewer than two windows: too early to tell"
    assert plateau([0.7] * 10).converged and plateau([0.7] * 10).p_value is None
    assert not plateau([0.6] * 5 + [0.7] * 5).converged, "a gain without scatter is a gain"
    with pytest.raises(ValueError, match="NaN"):
        plateau([0.5] * 9 + [float("nan")])
    with pytest.raises(ValueError, match="fraction"):
        plateau([0.5] * 10, fraction=0.8)
    with pytest.raises(ValueError, match="min_points"):
        plateau([0.5] * 10, min_points=1)
    assert validation_curve([{"val_loss_post": 2.0}, {"val_accuracy_post": 0.5, "val_loss_post": 1.0}]) == [-2.0, 0.5]


def _sinusoid(tmp_path, iterations: int) -> Trainer:
    config = TrainConfig(iterations=iterations, meta_batch=4, eval_every=5, eval_tasks=8, checkpoint_every=5,
                         inner_lr=0.01, meta_lr=1e-3, seed=3)  # fmt: skip
    return Trainer(config, tmp_path)


def test_a_run_stops_on_a_chunk_boundary_and_an_interrupted_one_stops_at_the_same_place(tmp_path, one_thread):
    torch.manual_seed(0)
    whole = _sinusoid(tmp_path / "whole", 400)
    verdict = fit_until_converged(whole, min_iterations=20, chunk=20)
    stop = verdict["stopped_at"]
    assert stop % 20 == 0 and stop >= 20 and verdict["converged"] == (stop < 400)
    assert stop > 20, "the test needs a run that goes past its first check"
    # the same run killed between two checks (its last checkpoint off the chunk grid), then resumed
    cut = _sinusoid(tmp_path / "cut", stop - 15)
    assert fit_until_converged(cut, min_iterations=20, chunk=20)["stopped_at"] == stop - 15
    resumed = Trainer.resume(tmp_path / "cut", iterations=400)
    assert fit_until_converged(resumed, min_iterations=20, chunk=20)["stopped_at"] == stop
    assert validation_curve(resumed.history) == pytest.approx(validation_curve(whole.history))
    with pytest.raises(ValueError, match="chunk"):
        fit_until_converged(whole, min_iterations=0, chunk=0)
