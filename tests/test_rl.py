"""MAML for policies (`mamlbook.rl`): the environment, returns, baseline, TRPO's pieces, the
estimators' bias on a bandit with a closed-form meta-gradient, and a tiny training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mamlbook.functional import params_of
from mamlbook.rl import bandit
from mamlbook.rl.envs import HORIZON, BatchedNav2D, Nav2D, nav_step, sample_goals, straight_line_returns
from mamlbook.rl.estimators import ESTIMATORS, adapt, build_meta_batch, kl_hessian_product, meta_objective
from mamlbook.rl.evaluate import adaptation_returns, evaluate_methods, format_table
from mamlbook.rl.outer import TRPO, conjugate_gradient, fisher_vector_product
from mamlbook.rl.policies import GaussianMLPPolicy
from mamlbook.rl.returns import (
    advantages,
    baseline_features,
    discounted_returns,
    fit_linear_baseline,
    gae,
    standardize,
)
from mamlbook.rl.rollout import rollout
from mamlbook.rl.trainer import Nav2DConfig, Nav2DTrainer


# ----- environment -----
def test_actions_are_clipped_and_scaled():
    state, goal = torch.zeros(3, 2), torch.tensor([0.4, -0.4])
    new, reward, reached = nav_step(state, goal, torch.tensor([[5.0, -5.0], [0.5, 0.0], [-1.0, 0.2]]))
    assert torch.allclose(new, torch.tensor([[0.1, -0.1], [0.05, 0.0], [-0.1, 0.02]]))
    assert torch.allclose(reward, -torch.linalg.vector_norm(new - goal, dim=-1))  # not squared
    assert not reached.any()


def test_goals_are_uniform_in_the_square_and_seeded():
    goals = sample_goals(2000, torch.Generator().manual_seed(0))
    assert goals.shape == (2000, 2) and goals.min() >= -0.5 and goals.max() <= 0.5
    assert abs(goals.mean().item()) < 0.02 and goals.min() < -0.49 and goals.max() > 0.49
    assert torch.equal(goals, sample_goals(2000, torch.Generator().manual_seed(0)))


def test_episode_ends_at_the_goal():
    env = Nav2D()
    obs, info = env.reset(options={"goal": (0.15, -0.05)})
    assert obs.dtype == np.float32 and np.allclose(obs, 0) and np.allclose(info["goal"], [0.15, -0.05])
    _, r1, term, trunc, _ = env.step([1.0, -0.5])
    assert not term and not trunc and r1 == pytest.approx(-0.05, abs=1e-6)
    obs, r2, term, trunc, _ = env.step([0.5, 0.0])
    assert term and not trunc and np.allclose(obs, [0.15, -0.05], atol=1e-6) and r2 == pytest.approx(0, abs=1e-6)


def test_episode_is_truncated_after_100_steps():
    env = Nav2D(goal=(0.5, 0.5))
    env.reset(seed=0)
    for step in range(1, HORIZON + 1):
        _, _, term, trunc, _ = env.step([-1.0, -1.0])  # away from the goal
        assert not term and trunc == (step == HORIZON)


def test_reset_seed_fixes_the_goal():
    a, b = Nav2D(), Nav2D()
    assert np.array_equal(a.reset(seed=7)[1]["goal"], b.reset(seed=7)[1]["goal"])
    assert not np.array_equal(a.reset(seed=7)[1]["goal"], a.reset(seed=8)[1]["goal"])
    goal = a.reset(seed=7)[1]["goal"]
    assert np.all(np.abs(goal) <= 0.5)


def test_gymnasium_api():
    gymnasium = pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    env = Nav2D()
    assert isinstance(env, gymnasium.Env)
    check_env(env, skip_render_check=True)


def test_batched_env_equals_single_envs_step_by_step():
    g = torch.Generator().manual_seed(1)
    goals = sample_goals(3, g)
    goals[0] = torch.tensor([0.03, 0.0])  # one that is reached, to check the freeze after the end
    n = 2
    batched_env = BatchedNav2D(goals, n, max_steps=30)
    singles = [[Nav2D(max_steps=30) for _ in range(n)] for _ in range(3)]
    for t, row in enumerate(singles):
        for env in row:
            env.reset(options={"goal": goals[t].numpy()})
    batched_env.reset()
    done = np.zeros((3, n), dtype=bool)
    for _ in range(30):
        action = torch.randn(3, n, 2, generator=g)
        action[0] = torch.tensor([0.3, 0.0])
        obs, reward, term, trunc, info = batched_env.step(action)
        for t in range(3):
            for i in range(n):
                if done[t, i]:
                    assert reward[t, i] == 0 and not info["active"][t, i]
                    continue
                o, r, te, tr, _ = singles[t][i].step(action[t, i].numpy())
                assert np.array_equal(obs[t, i].numpy(), o) and reward[t, i].item() == np.float32(r)
                assert bool(term[t, i]) == te and bool(trunc[t, i]) == tr
                done[t, i] = te or tr
    assert done.all() and bool(batched_env.done.all())


def test_oracle_reaches_every_goal_fast():
    goals = sample_goals(40, torch.Generator().manual_seed(30_000))
    returns = straight_line_returns(goals)
    assert returns.shape == (40,) and (returns <= 0).all() and (returns > -1.5).all()
    # an upper bound: the paper's oracle, a trained stochastic policy given the goal, scored -2.3
    assert returns.mean() > -2.3
    by_hand = -(math.hypot(0.2, 0.1) + 0.1)  # to (0.3, 0.2): via (0.1, 0.1) and (0.2, 0.2), then there
    assert straight_line_returns(torch.tensor([[0.3, 0.2]])).item() == pytest.approx(by_hand, abs=1e-6)


# ----- returns, advantages, baseline -----
def test_returns_and_gae_match_a_hand_loop():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    lengths = torch.tensor([[7, 4, 1], [5, 7, 2]])
    mask = (torch.arange(7) < lengths[..., None]).double()
    rewards = rewards * mask
    values = torch.randn(2, 3, 7, generator=g, dtype=torch.float64) * mask
    gamma, lam = 0.9, 0.8
    ret, adv = discounted_returns(rewards, mask, gamma), gae(rewards, values, mask, gamma, lam)
    for t in range(2):
        for i in range(3):
            n = int(lengths[t, i])
            r, v = rewards[t, i, :n].tolist(), values[t, i, :n].tolist() + [0.0]
            for k in range(n):
                assert ret[t, i, k].item() == pytest.approx(sum(gamma**j * r[k + j] for j in range(n - k)))
                deltas = [r[j] + gamma * v[j + 1] - v[j] for j in range(n)]
                want = sum((gamma * lam) ** j * deltas[k + j] for j in range(n - k))
                assert adv[t, i, k].item() == pytest.approx(want)
            assert (ret[t, i, n:] == 0).all() and (adv[t, i, n:] == 0).all()
    assert torch.allclose(gae(rewards, values, mask, gamma, 1.0), (ret - values) * mask)


def test_linear_baseline_is_exact_on_a_linear_target():
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(2, 4, 9, 2, generator=g, dtype=torch.float64)
    mask = (torch.arange(9) < torch.tensor([[9, 5, 3, 9], [2, 9, 9, 6]])[..., None]).double()
    features = baseline_features(obs)
    assert features.shape == (2, 4, 9, 8)
    assert torch.allclose(features[0, 0, :, 4], torch.arange(9, dtype=torch.float64) / 100)  # t per episode
    w = torch.randn(2, 8, generator=g, dtype=torch.float64)
    target = torch.einsum("tnhf,tf->tnh", features, w) * mask  # a different linear function per task
    fitted = fit_linear_baseline(obs, target, mask, ridge=1e-12)
    assert torch.allclose(fitted, target, atol=1e-7)


def test_standardized_advantages_have_zero_mean_unit_std_per_task():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 5, 6, generator=g) * 4 + 2
    mask = (torch.rand(3, 5, 6, generator=g) > 0.3).float()
    z = standardize(values, mask)
    for t in range(3):
        picked = z[t][mask[t] > 0]
        assert abs(picked.mean().item()) < 1e-5 and picked.std().item() == pytest.approx(1, abs=1e-4)
    assert (z[mask == 0] == 0).all()


# ----- TRPO's pieces -----
def test_conjugate_gradient_solves_an_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(12, 12, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=40, residual_tol=1e-24)
    assert torch.allclose(a @ x, b, atol=1e-8)
    rough = conjugate_gradient(lambda v: a @ v, b, iters=10)  # what TRPO uses: a descent direction
    assert (rough @ b) > 0


def tiny_batch(estimator: str = "surrogate", inner_steps: int = 1, dtype=torch.float64, seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = GaussianMLPPolicy(hidden=(4,)).to(dtype)
    params = params_of(policy)
    g = torch.Generator().manual_seed(seed)
    goals = sample_goals(2, g, dtype)
    pre = rollout(policy, params, goals, 3, g, horizon=6)
    adapted, post = None, None
    if inner_steps:
        adv = advantages(pre.obs, pre.rewards, pre.mask)
        adapted = adapt(policy, params, pre, adv, 0.1, estimator, create_graph=False)
        post = rollout(policy, adapted, goals, 3, g, horizon=6)
    return policy, params, build_meta_batch(policy, params, adapted, pre, post)


@pytest.mark.parametrize(("estimator", "inner_steps"), [("surrogate", 1), ("lvc", 1), ("dice", 1), ("dice", 0)])
def test_kl_hessian_products_equal_the_explicit_hessian(estimator, inner_steps):
    policy, params, batch = tiny_batch(estimator, inner_steps)
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [math.prod(s) for s in shapes]

    def kl_of(flat):
        pieces = dict(zip(names, (p.reshape(s) for p, s in zip(flat.split(sizes), shapes, strict=True)), strict=True))
        return meta_objective(policy, pieces, batch, estimator, 0.1, inner_steps)[1]

    flat = torch.cat([params[k].detach().reshape(-1) for k in names])
    hessian = torch.autograd.functional.hessian(kl_of, flat)
    v = torch.randn(flat.numel(), generator=torch.Generator().manual_seed(3), dtype=flat.dtype)
    _, kl = meta_objective(policy, params, batch, estimator, 0.1, inner_steps)
    assert kl.item() == pytest.approx(0, abs=1e-12)
    double_backward = fisher_vector_product(kl, list(params.values()))(v)
    factored = kl_hessian_product(policy, params, batch, estimator, 0.1, inner_steps)(v)
    assert torch.allclose(double_backward, hessian @ v, atol=1e-10, rtol=1e-8)
    assert torch.allclose(factored, hessian @ v, atol=1e-10, rtol=1e-8)


def test_trpo_step_keeps_the_kl_bound_and_lowers_the_loss():
    policy, params, batch = tiny_batch("surrogate")

    def objective(p, create_graph=True, clip=None):
        return meta_objective(policy, p, batch, "surrogate", 0.1, 1, clip, create_graph)

    before = {k: v.detach().clone() for k, v in params.items()}
    info = TRPO(max_kl=0.01).step(params, objective)
    assert info["accepted"] == 1.0
    loss, kl = objective(params, create_graph=False)
    assert kl.item() <= 0.01 + 1e-12 and info["kl"] == pytest.approx(kl.item())
    assert loss.item() < info["loss_before"]
    assert any(not torch.equal(before[k], params[k]) for k in params)


def test_objective_value_is_shared_and_gradients_differ_by_estimator():
    grads = {}
    for estimator in ESTIMATORS:
        policy, params, batch = tiny_batch("surrogate")  # same trajectories for all
        loss, _ = meta_objective(policy, params, batch, estimator, 0.1)
        grads[estimator] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))])
        if estimator == "surrogate":
            value = loss.item()
        assert loss.item() == pytest.approx(value)
        assert torch.isfinite(grads[estimator]).all() and grads[estimator].norm() > 0
    assert not torch.allclose(grads["surrogate"], grads["dice"])
    assert not torch.allclose(grads["surrogate"], grads["lvc"])


def test_adapt_leaves_the_initial_weights_alone_and_stays_differentiable():
    policy, params, batch = tiny_batch()
    before = {k: v.detach().clone() for k, v in params.items()}
    adapted = adapt(policy, params, batch.pre, batch.pre_adv, 0.1, "surrogate", create_graph=True)
    assert adapted["log_std"].shape == (2, 2) and adapted["log_std"].requires_grad
    assert all(torch.equal(before[k], params[k]) for k in params)
    (grad,) = torch.autograd.grad(adapted["mean.0.weight"].sum(), [params["mean.0.weight"]])
    assert torch.isfinite(grad).all()


# ----- the key test: the estimators' bias, against a closed form -----
SETTING = {"theta": 0.0, "goal": 1.0, "sigma": 1.0, "alpha": 0.1, "n": 10}


def test_bandit_closed_forms_by_simulation_and_finite_differences():
    theta, goal, sigma, alpha, n = SETTING.values()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(400_000, n, generator=g, dtype=torch.float64)

    def simulated(t):  # E[J(theta')] with common random numbers: a = t + sigma * noise
        a = t + sigma * noise
        g_hat = ((a - t) / sigma**2 * -((a - goal) ** 2)).mean(1)
        return bandit.expected_return(t + alpha * g_hat, goal, sigma)

    values = simulated(theta)
    se = values.std().item() / math.sqrt(values.numel())
    assert values.mean().item() == pytest.approx(bandit.meta_objective(theta, goal, sigma, alpha, n), abs=4 * se)
    h = 1e-4
    exact_fd = (
        bandit.meta_objective(theta + h, goal, sigma, alpha, n)
        - bandit.meta_objective(theta - h, goal, sigma, alpha, n)
    ) / (2 * h)
    assert exact_fd == pytest.approx(bandit.meta_gradient(theta, goal, sigma, alpha, n), rel=1e-7)
    # the pathwise derivative of the simulated objective (reparameterized actions) agrees too
    pathwise = (simulated(theta + h) - simulated(theta - h)) / (2 * h)
    pse = pathwise.std().item() / math.sqrt(pathwise.numel())
    assert pathwise.mean().item() == pytest.approx(bandit.meta_gradient(theta, goal, sigma, alpha, n), abs=4 * pse)


def test_dice_meta_gradient_is_unbiased_and_the_surrogate_is_not():
    dice = bandit.meta_gradient_bias("dice", **SETTING, samples=200_000, seed=1)
    surrogate = bandit.meta_gradient_bias("surrogate", **SETTING, samples=200_000, seed=1)
    lvc = bandit.meta_gradient_bias("lvc", **SETTING, samples=200_000, seed=1)
    assert abs(dice["z"]) < 4, dice
    assert abs(surrogate["z"]) > 6, surrogate
    # the measured biases are the derived ones
    assert abs(surrogate["bias"] - surrogate["expected_bias"]) < 4 * surrogate["se"]
    assert abs(lvc["bias"] - lvc["expected_bias"]) < 4 * lvc["se"]
    # LVC (= DiCE in the inner objective alone, for one step): biased, by O(alpha^2 / N), far less than the surrogate
    assert abs(lvc["z"]) > 6 and abs(lvc["bias"]) < 0.2 * abs(surrogate["bias"])


# ----- training and meta-testing -----
def tiny_config(**changes):
    settings = {"meta_batch": 4, "trajectories": 8, "horizon": 20, "iterations": 4, "checkpoint_every": 2}
    return Nav2DConfig(**{**settings, **changes})


@pytest.mark.parametrize("outer", ["trpo", "ppo"])
def test_training_resumes_exactly(tmp_path, outer):
    # PPO differentiates through the adaptation once per epoch: a smaller batch keeps it quick
    size = {"meta_batch": 3, "trajectories": 5, "horizon": 15} if outer == "ppo" else {}
    config = tiny_config(estimator="dice", outer=outer, **size)
    straight = Nav2DTrainer(config).fit(progress=False)
    first = Nav2DTrainer(config, tmp_path)
    first.fit(2, progress=False)
    resumed = Nav2DTrainer.resume(tmp_path)
    assert resumed.iteration == 2
    again = resumed.fit(progress=False)

    def strip(history):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert strip(again) == strip(straight)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(r["post_return"] is not None for r in straight)
    for k, v in Nav2DTrainer.resume(tmp_path).params.items():
        assert torch.equal(v, resumed.params[k])


def test_resume_refuses_changed_settings(tmp_path):
    Nav2DTrainer(tiny_config(iterations=1), tmp_path).fit(progress=False)
    with pytest.raises(ValueError, match="estimator"):
        Nav2DTrainer.resume(tmp_path, estimator="lvc")


def test_pretrained_baseline_trains_without_an_inner_loop():
    history = Nav2DTrainer(tiny_config(inner_steps=0, iterations=2)).fit(progress=False)
    assert [r["post_return"] for r in history] == [None, None]


def test_one_inner_step_raises_the_mean_return():
    policy = Nav2DConfig().make_policy()
    params = {k: v.detach() for k, v in policy.named_parameters()}
    goals = sample_goals(8, torch.Generator().manual_seed(5))
    returns = adaptation_returns(policy, params, goals, 1, 20, generator=torch.Generator().manual_seed(6))
    assert returns.shape == (2, 8)
    assert returns[1].mean() > returns[0].mean() + 5  # the paper: -82.7 -> -58.0 from a random init


def test_evaluation_table_lists_every_method():
    policy = Nav2DConfig(hidden=(8,)).make_policy()
    params = {k: v.detach() for k, v in policy.named_parameters()}
    report = evaluate_methods({"a": (policy, params)}, steps=1, goals=sample_goals(3), trajectories=2)
    assert set(report["methods"]) == {"a", "oracle (straight-line controller)"}
    assert len(report["methods"]["a"]["mean"]) == 2 and "1 steps" in format_table(report)


def test_cli_trains_and_evaluates_nav2d(tmp_path, capsys):
    from mamlbook.cli.main import main

    out = tmp_path / "run"
    argv = ["train", "nav2d", "--out", str(out), "--iterations", "1", "--meta-batch", "2", "--trajectories", "2"]
    assert main([*argv, "--estimator", "lvc", "--no-progress", "--baseline-iterations", "1"]) == 0
    assert (out / "checkpoint.pt").exists() and (out / "pretrained" / "checkpoint.pt").exists()
    assert main(["train", "nav2d", "--out", str(out), "--resume", "--iterations", "2", "--no-progress"]) == 0
    assert main(["train", "nav2d", "--out", str(out), "--model", "x"]) == 2
    capsys.readouterr()
    assert main(["eval", "nav2d", "--run", str(out), "--steps", "1", "--tasks", "2", "--trajectories", "2"]) == 0
    table = capsys.readouterr().out
    assert "MAML (lvc)" in table and "pretrained" in table and "random init" in table
    assert (out / "evaluation.json").exists()


def test_the_small_study_keeps_each_goals_return_after_every_step(tmp_path, monkeypatch):
    from mamlbook.studies import rl as rl_study
    from mamlbook.studies import run_study
    from mamlbook.studies.records import RLResult

    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    result = run_study("rl", small=True, progress=False)
    assert isinstance(result, RLResult)
    evaluation = result.evaluation
    goals = len(evaluation.goals)
    assert goals == rl_study.SMALL["goals"] and evaluation.steps == list(range(rl_study.SMALL["steps"] + 1))
    for name, returns in evaluation.methods.items():
        assert returns.per_goal is not None, name
        assert [len(row) for row in returns.per_goal] == [goals] * len(evaluation.steps), name
        for step, row in enumerate(returns.per_goal):
            # six significant digits move each return by at most a relative 5e-6
            assert sum(row) / goals == pytest.approx(returns.mean[step], rel=5e-6, abs=0), (name, step)
    again = run_study("rl", small=True, progress=False)
    assert again.evaluation == evaluation, "the kept evaluation is read back with its per-goal returns"
