"""TRPO's local model by hand (`rl.curvature`, `rl.analytic`) against autograd's, in float64.

At the weights a meta-batch was built with, the KL's Hessian through the adaptation is exactly
sum_t (I - alpha H_t) J_t^T M J_t (I - alpha H_t) (the Gauss-Newton form): its products, the outer loss
and gradient, the line-search values and a whole `Nav2DTrainer.step()` must agree with autograd's
(double backward) to rounding.
"""

from __future__ import annotations

import pytest
import torch

from mamlbook.functional import params_of
from mamlbook.rl import curvature
from mamlbook.rl.analytic import supports
from mamlbook.rl.envs import sample_goals
from mamlbook.rl.estimators import adapt, build_meta_batch, kl_hessian_product, meta_objective
from mamlbook.rl.outer import conjugate_gradient, fisher_vector_product
from mamlbook.rl.policies import GaussianMLPPolicy, sample
from mamlbook.rl.returns import advantages
from mamlbook.rl.rollout import Trajectories, rollout
from mamlbook.rl.trainer import Nav2DConfig, Nav2DTrainer
from mamlbook.train.checkpoint import load_checkpoint, save_checkpoint

DTYPE = torch.float64
CASES = [("surrogate", 1), ("lvc", 1), ("dice", 1), ("dice", 0)]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def ended_early(traj: Trajectories, generator: torch.Generator) -> Trajectories:
    """Episodes cut at random lengths, as if they had reached their goals (masks with zeros)."""
    horizon = traj.mask.shape[-1]
    lengths = torch.randint(horizon // 3, horizon + 1, traj.mask.shape[:2], generator=generator)
    mask = traj.mask * (torch.arange(horizon) < lengths[..., None]).to(traj.mask.dtype)
    return Trajectories(traj.obs, traj.actions, traj.rewards * mask, mask, traj.goals)


def meta_batch(estimator: str, inner_steps: int, hidden=(100, 100), tasks=3, seed=0):
    """A float64 meta-batch on a policy with nonzero biases and log-std (every term of the derivatives counts)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = GaussianMLPPolicy(hidden=hidden).to(DTYPE)
        params = params_of(policy)
        with torch.no_grad():
            for value in params.values():
                value.add_(0.1 * torch.randn_like(value))
    g = torch.Generator().manual_seed(seed)
    goals = sample_goals(tasks, g, DTYPE)
    pre = ended_early(rollout(policy, params, goals, 3, g, horizon=10), g)
    adapted, post = None, None
    if inner_steps:
        adv = advantages(pre.obs, pre.rewards, pre.mask)
        adapted = adapt(policy, params, pre, adv, 0.1, estimator, create_graph=False)
        post = ended_early(rollout(policy, adapted, goals, 3, g, horizon=10), g)
    return policy, params, build_meta_batch(policy, params, adapted, pre, post)


@pytest.fixture(params=[2**40, 1], ids=["one-chunk", "task-by-task"])
def chunk_bytes(request, monkeypatch):
    monkeypatch.setattr(curvature, "CHUNK_BYTES", request.param)


@pytest.mark.parametrize(("estimator", "inner_steps"), CASES)
def test_local_model_equals_autograds(estimator, inner_steps, chunk_bytes):
    policy, params, batch = meta_batch(estimator, inner_steps)
    leaves = list(params.values())
    model = curvature.local_model(policy, params, batch, estimator, 0.1, inner_steps, damping=1e-3)
    loss, kl = meta_objective(policy, params, batch, estimator, 0.1, inner_steps)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, leaves, retain_graph=True)])
    assert model.loss == pytest.approx(loss.item(), abs=1e-14)
    assert relative(model.gradient, grad) < 1e-12
    exact = kl_hessian_product(policy, params, batch, estimator, 0.1, inner_steps, damping=1e-3)
    double_backward = fisher_vector_product(kl, leaves, damping=1e-3)
    for seed in range(2):
        v = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
        fast = model.product(v)
        assert relative(fast, exact(v)) < 1e-12
        assert relative(fast, double_backward(v)) < 1e-12
        assert (v @ fast).item() > 0


def test_the_inner_losses_curvature_differs_by_estimator():
    """The magic box's extra term is in the LVC product (so the test above checks it)."""
    products = {}
    for estimator in ("surrogate", "lvc"):
        policy, params, batch = meta_batch("surrogate", 1)  # the same trajectories for both
        v = torch.randn(
            sum(p.numel() for p in params.values()), generator=torch.Generator().manual_seed(0), dtype=DTYPE
        )
        products[estimator] = curvature.local_model(policy, params, batch, estimator, 0.1).product(v.to(DTYPE))
    assert relative(products["lvc"], products["surrogate"]) > 1e-6


@pytest.mark.parametrize(("estimator", "inner_steps"), CASES)
def test_line_search_values_equal_meta_objectives(estimator, inner_steps, chunk_bytes):
    policy, params, batch = meta_batch(estimator, inner_steps)
    with torch.no_grad():
        for value in params.values():
            value.add_(0.05 * torch.randn(value.shape, generator=torch.Generator().manual_seed(7), dtype=DTYPE))
    loss, kl = meta_objective(policy, params, batch, estimator, 0.1, inner_steps, create_graph=False)
    fast_loss, fast_kl = curvature.objective(policy, params, batch, estimator, 0.1, inner_steps)
    assert kl.item() > 1e-4
    assert fast_loss.item() == pytest.approx(loss.item(), rel=1e-12)
    assert fast_kl.item() == pytest.approx(kl.item(), rel=1e-10)


def test_other_widths_and_unsupported_policies():
    policy, params, batch = meta_batch("dice", 1, hidden=(7, 5))
    v = torch.randn(sum(p.numel() for p in params.values()), generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    exact = kl_hessian_product(policy, params, batch, "dice", 0.1, 1)(v)
    assert relative(curvature.local_model(policy, params, batch, "dice", 0.1).product(v), exact) < 1e-12
    assert not supports(GaussianMLPPolicy(hidden=(8,))) and not supports(GaussianMLPPolicy(hidden=(4, 4, 4)))
    with pytest.raises(ValueError, match="two hidden"):
        curvature.local_model(GaussianMLPPolicy(hidden=(8,)).to(DTYPE), params, batch, "dice", 0.1)


def random_meta_batch(estimator: str, inner_steps: int, obs_dim: int, act_dim: int, tasks=3, seed=0):
    """A float64 meta-batch of random observations and rewards (no environment) for a policy of other
    input and output sizes, goals `[T, 1]` as the cheetah's."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = GaussianMLPPolicy(obs_dim, act_dim, (100, 100)).to(DTYPE)
        params = params_of(policy)
        with torch.no_grad():
            for value in params.values():
                value.add_(0.1 * torch.randn_like(value))
    g = torch.Generator().manual_seed(seed)
    goals = 2 * torch.rand(tasks, 1, generator=g, dtype=DTYPE)

    def episodes(weights):
        obs = torch.randn(tasks, 3, 10, obs_dim, generator=g, dtype=DTYPE)
        actions = sample(policy, weights, obs, g)
        rewards = torch.randn(tasks, 3, 10, generator=g, dtype=DTYPE)
        return ended_early(Trajectories(obs, actions, rewards, torch.ones_like(rewards), goals), g)

    pre, adapted, post = episodes(params), None, None
    if inner_steps:
        adv = advantages(pre.obs, pre.rewards, pre.mask)
        adapted = adapt(policy, params, pre, adv, 0.1, estimator, create_graph=False)
        post = episodes(adapted)
    return policy, params, build_meta_batch(policy, params, adapted, pre, post)


@pytest.mark.parametrize(("estimator", "inner_steps"), CASES)
def test_the_cheetahs_sizes(estimator, inner_steps):
    """17 observations and 6 actions (`rl.cheetah`): the derivatives by hand are autograd's there too."""
    policy, params, batch = random_meta_batch(estimator, inner_steps, 17, 6)
    leaves = list(params.values())
    model = curvature.local_model(policy, params, batch, estimator, 0.1, inner_steps, damping=1e-3)
    loss, kl = meta_objective(policy, params, batch, estimator, 0.1, inner_steps)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, leaves, retain_graph=True)])
    # the loss is a sum of terms that cancel at these weights: rounding relative to the terms' size
    terms = (batch.score_weight[:, None] * batch.pre_logp_old).abs().sum().item() + 1.0
    assert model.loss == pytest.approx(loss.item(), abs=1e-14 * terms)
    assert relative(model.gradient, grad) < 1e-12
    exact = kl_hessian_product(policy, params, batch, estimator, 0.1, inner_steps, damping=1e-3)
    v = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    assert relative(model.product(v), exact(v)) < 1e-12
    with torch.no_grad():
        for value in params.values():
            value.add_(0.05 * torch.randn(value.shape, generator=torch.Generator().manual_seed(7), dtype=DTYPE))
    loss, kl = meta_objective(policy, params, batch, estimator, 0.1, inner_steps, create_graph=False)
    fast_loss, fast_kl = curvature.objective(policy, params, batch, estimator, 0.1, inner_steps)
    assert fast_loss.item() == pytest.approx(loss.item(), rel=1e-12, abs=1e-14 * terms)
    assert fast_kl.item() == pytest.approx(kl.item(), rel=1e-10)


def test_conjugate_gradient_returns_the_product_of_its_solution():
    a = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    a = a @ a.T + torch.eye(6, dtype=DTYPE)
    b = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    x, ax = conjugate_gradient(lambda v: a @ v, b, iters=4, with_product=True)
    assert torch.equal(x, conjugate_gradient(lambda v: a @ v, b, iters=4))
    assert torch.allclose(ax, a @ x, rtol=1e-12, atol=1e-14)


def float64_trainer(curvature_: str, **settings) -> Nav2DTrainer:
    settings = {"meta_batch": 2, "trajectories": 3, "horizon": 10, **settings}
    trainer = Nav2DTrainer(Nav2DConfig(curvature=curvature_, **settings))
    trainer.policy.to(DTYPE)
    trainer.params = {k: v.detach().to(DTYPE).requires_grad_(True) for k, v in trainer.params.items()}
    return trainer


def steps_both_ways(**settings) -> tuple[dict, dict, torch.Tensor, torch.Tensor]:
    """One `step()` each way from the same start: the rows and the steps taken (flat)."""
    rows, steps = {}, {}
    for way in ("exact", "gauss-newton"):
        trainer = float64_trainer(way, **settings)
        start = torch.cat([v.detach().reshape(-1) for v in trainer.params.values()])
        rows[way] = trainer.step()
        steps[way] = torch.cat([v.detach().reshape(-1) for v in trainer.params.values()]) - start
    assert rows["exact"]["accepted"] == rows["gauss-newton"]["accepted"] == 1.0
    assert rows["exact"]["backtracks"] == rows["gauss-newton"]["backtracks"]
    return rows["exact"], rows["gauss-newton"], steps["exact"], steps["gauss-newton"]


@pytest.mark.parametrize(("estimator", "inner_steps"), CASES + [("surrogate", 0)])
def test_trpo_step_is_the_same_either_way(estimator, inner_steps):
    """Five conjugate-gradient steps: the step agrees to rounding."""
    exact_row, row, exact, fast = steps_both_ways(estimator=estimator, inner_steps=inner_steps, cg_iters=5)
    assert relative(fast, exact) < 1e-10
    for key in ("loss_after", "kl", "grad_norm"):
        assert row[key] == pytest.approx(exact_row[key], rel=1e-9)


def test_trpo_step_at_the_papers_settings_agrees_as_autograds_own_two_ways_do():
    """Ten conjugate-gradient steps on these tiny batches (a KL Hessian of rank far below the 10,604
    weights, damping 1e-5) amplify the products' rounding (1e-16) to 1e-9 in the step: over estimators
    and seeds 0-3, autograd's own two ways (`kl_hessian_product`, and the double backward of the
    objective's KL) differ by up to 2.9e-9, and "gauss-newton" from "exact" by up to 5.2e-9."""
    _, _, exact, fast = steps_both_ways(estimator="lvc")
    assert relative(fast, exact) < 1e-7


def test_config_names_the_curvature():
    assert Nav2DConfig().curvature == "gauss-newton"
    assert Nav2DConfig.from_dict({"estimator": "dice"}).curvature == "gauss-newton"
    with pytest.raises(ValueError, match="curvature"):
        Nav2DConfig(curvature="fisher")
    # a policy the hand-made derivatives do not cover takes autograd's path
    row = float64_trainer("gauss-newton", hidden=(8,)).step()
    assert row["accepted"] == 1.0


def test_a_resumed_run_goes_on_the_way_it_started(tmp_path):
    """config.json (and the study's records) say what a run computes; the checkpoint says how."""
    settings = {"meta_batch": 2, "trajectories": 3, "horizon": 10, "iterations": 1}
    Nav2DTrainer(Nav2DConfig(curvature="exact", **settings), tmp_path).fit(progress=False)
    assert "curvature" not in Nav2DConfig(**settings).to_dict()
    assert Nav2DTrainer.resume(tmp_path).config.curvature == "exact"
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    del payload["curvature"]  # a run saved before the choice existed took autograd's path
    save_checkpoint(tmp_path / "checkpoint.pt", payload)
    assert Nav2DTrainer.resume(tmp_path).config.curvature == "exact"


def test_the_bench_runs_nav2d_on_its_own_only(capsys):
    from mamlbook.cli.main import main

    assert main(["bench", "--problems", "nav2d,sinusoid"]) == 2
    assert "nav2d is benchmarked on its own" in capsys.readouterr().err
    assert main(["bench", "--problems", "sinusoid", "--estimator", "surrogate"]) == 2
    assert "--estimator applies to --problems nav2d only" in capsys.readouterr().err


def test_nav2d_timings_are_written_and_read_as_benchmark_rows(tmp_path):
    from mamlbook.bench.runner import read_rows, write_json
    from mamlbook.cli.bench import nav2d_rows

    result = {
        "settings": {"meta_batch": 20, "trajectories": 20},
        "threads": 1,
        "iterations": 2,
        "seconds": {"exact": 5.0, "gauss-newton": 1.5},
        "steps": {"exact": [5.2, 4.8], "gauss-newton": [1.6, 1.4]},
    }
    rows = read_rows(write_json(nav2d_rows(result), tmp_path / "bench-nav2d.json", command="test"))
    by = {r.strategy: r for r in rows}
    assert by["exact"].ms_median == 5000.0 and by["gauss-newton"].ms_min == pytest.approx(1400.0)
    assert {r.problem for r in rows} == {"nav2d"} and all(r.meta_batch == 20 and r.repeat == 2 for r in rows)
