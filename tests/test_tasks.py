import math

import pytest
import torch

import mamlbook as mb


def test_sinusoid_shapes_and_ranges_follow_finn_et_al():
    batch = mb.Sinusoid(k_shot=10).sample(500, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (500, 10, 1) and batch.query_y.shape == (500, 10, 1)
    amp, phase = batch.info["amplitude"], batch.info["phase"]
    assert 0.1 <= amp.min() and amp.max() <= 5.0 and amp.max() > 4.5 and amp.min() < 0.5
    assert 0.0 <= phase.min() and phase.max() <= math.pi
    x = torch.cat([batch.support_x, batch.query_x], 1)
    assert -5.0 <= x.min() < -4.9 and 4.9 < x.max() <= 5.0
    expected = amp.view(-1, 1, 1) * torch.sin(batch.support_x - phase.view(-1, 1, 1))
    torch.testing.assert_close(batch.support_y, expected)


def test_same_seed_same_tasks_and_different_seed_different_tasks():
    tasks = mb.Sinusoid(k_shot=5)
    a = tasks.sample(8, torch.Generator().manual_seed(7))
    b = tasks.sample(8, torch.Generator().manual_seed(7))
    c = tasks.sample(8, torch.Generator().manual_seed(8))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    assert not torch.equal(a.support_x, c.support_x)


def test_support_and_query_are_different_points():
    batch = mb.Sinusoid(k_shot=5, k_query=15).sample(3, torch.Generator().manual_seed(0))
    assert batch.query_x.shape == (3, 15, 1)
    assert not torch.isclose(batch.support_x[:, :, None, 0], batch.query_x[:, None, :, 0]).any()


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_k_below_one_is_refused_with_a_clear_message(bad):
    with pytest.raises(ValueError, match="k_shot"):
        mb.Sinusoid(k_shot=bad)


def test_unknown_task_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'sine'.*sinusoid"):
        mb.make_task("sine")


def test_task_batch_indexing_and_dtype_conversion_keep_labels():
    batch = mb.HalfPlanes(k_shot=4).sample(3, torch.Generator().manual_seed(0))
    one = batch[1]
    assert len(one) == 1 and torch.equal(one.support_x[0], batch.support_x[1])
    assert set(batch.support_y.unique().tolist()) <= {0.0, 1.0}
    assert batch.to(dtype=torch.float64).support_x.dtype == torch.float64


def test_lines_are_fit_exactly_by_the_linear_model():
    batch = mb.Lines(k_shot=4).sample(2, torch.Generator().manual_seed(0))
    w, b = batch.info["slope"], batch.info["intercept"]
    torch.testing.assert_close(batch.query_y, w.view(-1, 1, 1) * batch.query_x + b.view(-1, 1, 1))
