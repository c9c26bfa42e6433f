"""The peers' MAML-TRPO meta-updates (`bench.nav2d_anchors`) against ours, in float64.

From the same weights and the same episodes as `Nav2DTrainer.step()` (estimator "surrogate", what
both peers estimate; curvature "exact"), each anchor's step direction before the line search must be
ours to 1e-8 where the peer computes the same quantity: pytorch-maml-rl given our advantages;
learn2learn given our advantages, with twice the step size and half the damping (its log-probabilities
and KL are means over the two action dimensions) and textbook conjugate gradient. The tests also
measure what their own choices change.
"""

from __future__ import annotations

import math

import pytest
import torch

from mamlbook.bench import nav2d_anchors as anchors
from mamlbook.bench.nav2d_anchors import (
    AnchorTrainer,
    Learn2LearnUpdate,
    PytorchMamlRlUpdate,
    cherry_conjugate_gradient,
    deleu_conjugate_gradient,
    sample_episodes,
)
from mamlbook.rl import outer
from mamlbook.rl.estimators import build_meta_batch
from mamlbook.rl.returns import discounted_returns
from mamlbook.rl.trainer import Nav2DConfig, Nav2DTrainer

DTYPE = torch.float64
CONFIG = Nav2DConfig(meta_batch=2, trajectories=2, horizon=10, estimator="surrogate", curvature="exact")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


TEXTBOOK_CG = outer.conjugate_gradient  # ours, which the trainer's TRPO step calls


def textbook_cg(matvec, b, iters):
    return TEXTBOOK_CG(matvec, b, iters)


@pytest.fixture(scope="module")
def ours():
    """Our trainer's step in float64 and what it started from: the policy, the weights, the episodes
    (sampled again from the generator's state before the step), our advantages and our direction."""
    trainer = Nav2DTrainer(CONFIG)
    trainer.policy.to(DTYPE)
    trainer.params = {k: v.detach().to(DTYPE).requires_grad_(True) for k, v in trainer.params.items()}
    start = {k: v.detach().clone() for k, v in trainer.params.items()}
    state = trainer.generator.get_state()
    captured = []

    def spy(matvec, b, iters=10, **kwargs):
        x = textbook_cg(matvec, b, iters)
        captured.append(x.detach().clone())
        return x

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outer, "conjugate_gradient", spy)
        trainer.step()
    assert len(captured) == 1
    generator = torch.Generator()
    generator.set_state(state)
    episodes = sample_episodes(trainer.policy, start, CONFIG, generator)
    # every episode runs to the horizon: the per-episode and per-step means coincide
    assert bool((episodes.pre.mask > 0).all()) and bool((episodes.post.mask > 0).all())
    batch = build_meta_batch(trainer.policy, start, episodes.adapted, episodes.pre, episodes.post, CONFIG.gamma)
    return {
        "policy": trainer.policy,
        "start": start,
        "episodes": episodes,
        "advantages": (batch.pre_adv, batch.post_adv),
        "direction": captured[0],
    }


def run(update, ours, advantages=None) -> tuple[dict, dict]:
    params = {k: v.clone().requires_grad_(True) for k, v in ours["start"].items()}
    return update(params, ours["episodes"], advantages=advantages), params


def test_pytorch_maml_rl_takes_our_direction_given_our_advantages(ours):
    update = PytorchMamlRlUpdate(ours["policy"], CONFIG)
    info, _ = run(update, ours, ours["advantages"])
    assert relative(update.direction, ours["direction"]) < 1e-8
    assert info["loss_before"] == pytest.approx(0.0, abs=1e-12)  # its old policy is its own first pass
    # its own advantages (the sampler's weighted_normalize, per task) change the direction
    own = PytorchMamlRlUpdate(ours["policy"], CONFIG)
    run(own, ours)
    assert relative(own.direction, ours["direction"]) > 1e-2


def test_pytorch_maml_rl_normalizes_advantages_per_task():
    """`weighted_normalize`: the mean of the episodes' means is 0, and the mean over episodes of each
    episode's mean square is 1 (epsilon aside), for episodes of different lengths."""
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 4, 6, generator=g, dtype=DTYPE)
    lengths = torch.randint(2, 7, (3, 4), generator=g)
    mask = (torch.arange(6) < lengths[..., None]).to(DTYPE)
    out = anchors._weighted_normalize(values * mask, mask)
    assert torch.allclose(anchors._weighted_mean(out, mask).mean(-1), torch.zeros(3, dtype=DTYPE), atol=1e-7)
    assert torch.allclose(anchors._weighted_mean(out**2, mask).mean(-1), torch.ones(3, dtype=DTYPE), atol=1e-7)
    assert bool((out[mask == 0] == 0).all())


def test_learn2learn_takes_our_direction_once_its_means_over_actions_are_undone(ours):
    """Means over the two action dimensions halve its inner gradient, its outer gradient and its KL:
    with twice the step size and half the damping it solves our system, and its step, bounded by a
    KL half ours, is sqrt(2) times pytorch-maml-rl's (whose length rule is ours)."""
    mapped = dict(adapt_lr=2 * CONFIG.inner_lr, damping=CONFIG.cg_damping / 2)
    update = Learn2LearnUpdate(ours["policy"], CONFIG, conjugate_gradient=textbook_cg, **mapped)
    info, _ = run(update, ours, ours["advantages"])
    assert relative(update.direction, ours["direction"]) < 1e-8
    assert info["loss_before"] == pytest.approx(0.0, abs=1e-12)  # its old policies are its own adaptation
    deleu = PytorchMamlRlUpdate(ours["policy"], CONFIG)
    run(deleu, ours, ours["advantages"])
    assert relative(update.full_step, math.sqrt(2) * deleu.full_step) < 1e-8
    # what its own choices change, one at a time, then all together
    for changed in (
        dict(conjugate_gradient=cherry_conjugate_gradient, **mapped),  # cherry's conjugate gradient
        dict(conjugate_gradient=textbook_cg),  # its inner step (half ours) and damping (twice ours)
    ):
        other = Learn2LearnUpdate(ours["policy"], CONFIG, **changed)
        run(other, ours, ours["advantages"])
        assert relative(other.direction, ours["direction"]) > 1e-2
    own = Learn2LearnUpdate(ours["policy"], CONFIG)
    run(own, ours)  # its advantages too
    assert relative(own.direction, ours["direction"]) > 1e-2


def test_cherrys_conjugate_gradient_is_not_conjugate_gradient():
    """Its residual and first search direction are one tensor: on a 6x6 system, six iterations of
    textbook conjugate gradient (pytorch-maml-rl's and ours) solve it; cherry's do not. Its first
    iteration is the textbook one (up to the 1e-8 added to p'Ap)."""
    a = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    a = a @ a.T + torch.eye(6, dtype=DTYPE)
    b = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    exact = torch.linalg.solve(a, b)
    assert relative(deleu_conjugate_gradient(lambda v: a @ v, b, 6, residual_tol=0.0), exact) < 1e-8
    assert relative(textbook_cg(lambda v: a @ v, b, 6), exact) < 1e-8
    assert relative(cherry_conjugate_gradient(lambda v: a @ v, b, 6, tol=0.0), exact) > 1e-3
    first = textbook_cg(lambda v: a @ v, b, 1)
    assert relative(cherry_conjugate_gradient(lambda v: a @ v, b, 1), first) < 1e-8
    unchanged = b.clone()
    cherry_conjugate_gradient(lambda v: a @ v, b, 6)
    assert torch.equal(b, unchanged)


def test_learn2learns_replay_lays_episodes_end_to_end(ours):
    pre = ours["episodes"].pre
    lengths = pre.mask[0].sum(-1).long().tolist()
    replay = anchors._replay(pre, 0)
    assert replay.state.shape == (sum(lengths), 2)
    ends = torch.tensor(lengths).cumsum(0) - 1
    assert torch.equal(replay.done[:, 0].nonzero()[:, 0], ends)
    assert torch.equal(replay.next_state[:-1][replay.done[:-1, 0] == 0], replay.state[1:][replay.done[:-1, 0] == 0])
    # cherry's discount restarts at each episode's end: our returns, laid end to end
    returns = discounted_returns(pre.rewards, pre.mask, CONFIG.gamma)[0][pre.mask[0] > 0]
    assert torch.allclose(anchors._discount(CONFIG.gamma, replay.reward, replay.done)[:, 0], returns, rtol=1e-12)


def test_anchor_trainers_sample_as_ours_and_take_a_step():
    settings = dict(meta_batch=2, trajectories=2, horizon=5)
    row = Nav2DTrainer(Nav2DConfig(curvature="exact", **settings)).step()
    for name in anchors.ANCHORS:
        anchor_row = AnchorTrainer(name, Nav2DConfig(**settings)).step()
        assert anchor_row["pre_return"] == row["pre_return"] and anchor_row["post_return"] == row["post_return"]
        assert anchor_row["accepted"] in (0.0, 1.0) and anchor_row["iteration"] == 1
    with pytest.raises(ValueError, match="unknown anchor"):
        AnchorTrainer("higher", Nav2DConfig(**settings))


def test_the_bench_times_every_implementation_in_one_loop(tmp_path):
    from mamlbook.bench.nav2d import IMPLS, compare_nav2d_step
    from mamlbook.bench.runner import read_rows, write_json
    from mamlbook.cli.bench import nav2d_impls, nav2d_rows

    result = compare_nav2d_step(IMPLS, iterations=1, warmup=0, meta_batch=2, trajectories=2, horizon=5)
    assert set(result["seconds"]) == set(IMPLS) and all(s > 0 for s in result["seconds"].values())
    rows = read_rows(write_json(nav2d_rows(result), tmp_path / "bench-nav2d.json", command="test"))
    by = {(r.impl, r.strategy): r for r in rows}
    assert set(by) == {
        ("mamlbook", "exact"),
        ("mamlbook", "gauss-newton"),
        ("pytorch-maml-rl", "maml-trpo"),
        ("learn2learn", "maml-trpo"),
    }
    assert by["learn2learn", "maml-trpo"].ratio_vs_learn2learn == pytest.approx(1.0)
    # each row says which meta-gradient it computed: the anchors the surrogate's, ours the config's
    assert by["mamlbook", "exact"].estimator == Nav2DConfig().estimator
    assert {by[a, "maml-trpo"].estimator for a in ("learn2learn", "pytorch-maml-rl")} == {"surrogate"}
    like = compare_nav2d_step(["gauss-newton"], iterations=1, warmup=0, meta_batch=2, trajectories=2, horizon=5,
                              estimator="surrogate")  # fmt: skip
    assert [r["estimator"] for r in nav2d_rows(like)] == ["surrogate"]
    assert nav2d_impls(["mamlbook", "learn2learn"]) == ["exact", "gauss-newton", "learn2learn"]
    assert nav2d_impls(["mamlbook:exact", "pytorch-maml-rl"]) == ["exact", "pytorch-maml-rl"]
    with pytest.raises(ValueError, match="unknown impl 'higher' on nav2d"):
        nav2d_impls(["higher"])
    with pytest.raises(ValueError, match="unknown curvature"):
        compare_nav2d_step(["higher"], iterations=1)
