"""The running cheetah (`rl.cheetah`, `Nav2DConfig(env="cheetah-vel")`, `mamlbook train cheetah-vel`).

The batched environment against a plain `gymnasium.make("HalfCheetah-v5")` with the goal-velocity
reward, the goals, a tiny training run that checkpoints and resumes exactly, two processes against
one, the meta-test, and the command line with and without MuJoCo. Tests that step the cheetah are
skipped where MuJoCo or Gymnasium is missing (the `mujoco` extra).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from mamlbook.rl.cheetah import CTRL_COST, sample_velocities, velocity_reward
from mamlbook.rl.trainer import Nav2DConfig, Nav2DTrainer, load_policy

TINY = {"env": "cheetah-vel", "meta_batch": 2, "trajectories": 2, "horizon": 20}


@pytest.fixture
def mujoco():
    pytest.importorskip("gymnasium", reason="the cheetah needs Gymnasium: pip install 'mamlbook[mujoco]'")
    return pytest.importorskip("mujoco", reason="the cheetah needs MuJoCo: pip install 'mamlbook[mujoco]'")


def test_goal_velocities_are_uniform_in_0_2_and_seeded():
    goals = sample_velocities(10_000, torch.Generator().manual_seed(0))
    assert goals.shape == (10_000, 1) and goals.dtype == torch.float32
    assert 0.0 <= goals.min() < 0.01 and 1.99 < goals.max() <= 2.0
    assert goals.mean().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(goals[:5], sample_velocities(5, torch.Generator().manual_seed(0)))


def test_velocity_reward_is_rllabs():
    """-|v - goal| - 0.05 ||a||^2 with the action clipped to [-1, 1] (cbfinn/maml_rl's HalfCheetahEnvRand)."""
    action = np.array([0.5, -2.0, 0.0, 1.0, 3.0, -0.1])
    clipped = np.array([0.5, -1.0, 0.0, 1.0, 1.0, -0.1])
    assert CTRL_COST == 0.05
    assert velocity_reward(1.5, 0.25, action) == pytest.approx(-1.25 - 0.05 * (clipped**2).sum(), abs=1e-15)


def test_the_config_picks_the_environments_sizes_and_old_runs_are_nav2d():
    config = Nav2DConfig(env="cheetah-vel")
    assert config.horizon == 200 and Nav2DConfig().horizon == 100
    policy = config.make_policy()
    assert policy.mean[0].in_features == 17 and policy.log_std.shape == (6,)
    assert [m.out_features for m in policy.mean if hasattr(m, "out_features")] == [100, 100, 6]
    values = config.to_dict()
    assert values["env"] == "cheetah-vel" and values["model"] == "cheetah-vel-gaussian-mlp"
    assert Nav2DConfig.from_dict(values) == config
    assert "env" not in Nav2DConfig().to_dict()  # 2D navigation's config.json is as before
    assert Nav2DConfig.from_dict({"estimator": "dice", "horizon": 100}).env == "nav2d"
    with pytest.raises(ValueError, match="unknown environment"):
        Nav2DConfig(env="ant")


def test_the_batched_cheetah_is_gymnasiums_halfcheetah_with_the_velocity_reward(mujoco):
    """3 cheetahs x 30 steps from the same start, with actions beyond [-1, 1]: equal observations and rewards."""
    import gymnasium

    from mamlbook.rl.cheetah import BatchedHalfCheetah, HalfCheetahVel

    goals = torch.tensor([[0.3], [1.7], [1.0]], dtype=torch.float64)
    env = BatchedHalfCheetah(goals, 1, max_steps=30, generator=torch.Generator().manual_seed(0))
    obs, _ = env.reset()
    plain = [gymnasium.make("HalfCheetah-v5") for _ in goals]
    wrapped = [HalfCheetahVel(goal=g.item(), max_steps=30) for g in goals]
    for i, (p, w) in enumerate(zip(plain, wrapped, strict=True)):
        qpos, qvel = env.data[i].qpos.copy(), env.data[i].qvel.copy()
        for e in (p, w):
            e.reset(seed=i)
            e.unwrapped.set_state(qpos, qvel)
        assert np.array_equal(p.unwrapped._get_obs(), obs[i, 0].numpy())
    actions = 1.5 * torch.randn(30, 3, 1, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for step in range(30):
        obs, reward, terminated, truncated, info = env.step(actions[step])
        assert info["active"].all() and not terminated.any()
        for i, (p, w) in enumerate(zip(plain, wrapped, strict=True)):
            a = actions[step, i, 0].numpy()
            p_obs, _, _, _, p_info = p.step(a)
            expected = velocity_reward(p_info["x_velocity"], goals[i, 0].item(), a)
            assert np.array_equal(p_obs, obs[i, 0].numpy()), (step, i)
            assert reward[i, 0].item() == expected, (step, i)
            w_obs, w_reward, _, w_truncated, w_info = w.step(a)
            assert np.array_equal(w_obs, p_obs) and w_reward == expected and w_info["goal"] == goals[i, 0].item()
    assert truncated.all() and env.done.all() and w_truncated


def test_starts_are_gymnasiums_noise_and_a_share_draws_the_whole_batchs(mujoco):
    from mamlbook.rl.cheetah import BatchedHalfCheetah

    goals = sample_velocities(4, torch.Generator().manual_seed(0))
    whole = BatchedHalfCheetah(goals, 50, generator=torch.Generator().manual_seed(1))
    whole.reset()
    qpos = np.stack([d.qpos for d in whole.data]) - whole.init_qpos
    qvel = np.stack([d.qvel for d in whole.data]) - whole.init_qvel
    assert np.abs(qpos).max() <= 0.1 and np.abs(qpos).max() > 0.09  # uniform in +-0.1
    assert qvel.std() == pytest.approx(0.1, rel=0.1)  # normal with scale 0.1
    share = BatchedHalfCheetah(goals[1:3], 50, generator=torch.Generator().manual_seed(1), among=(1, 4))
    share.reset()
    assert np.array_equal(np.stack([d.qpos for d in share.data]), np.stack([d.qpos for d in whole.data[50:150]]))


def test_tiny_training_checkpoints_and_resumes_to_the_same_parameters(mujoco, tmp_path):
    straight = Nav2DTrainer(Nav2DConfig(**TINY, iterations=2), tmp_path / "straight")
    history = straight.fit(progress=False)
    assert len(history) == 2 and all(np.isfinite(row["pre_return"]) for row in history)
    assert history[0]["pre_return"] < 0 and history[0]["accepted"] == 1.0
    Nav2DTrainer(Nav2DConfig(**TINY, iterations=1), tmp_path / "split").fit(progress=False)
    resumed = Nav2DTrainer.resume(tmp_path / "split", iterations=2)
    assert resumed.config.env == "cheetah-vel" and resumed.iteration == 1
    resumed.fit(progress=False)
    for name, value in straight.params.items():
        assert torch.equal(resumed.params[name], value), name
    saved = json.loads((tmp_path / "split" / "config.json").read_text())
    assert saved["env"] == "cheetah-vel" and saved["model"] == "cheetah-vel-gaussian-mlp"
    config, policy, params = load_policy(tmp_path / "split")
    assert config.env == "cheetah-vel" and params["mean.0.weight"].shape == (100, 17)


def test_meta_test_goals_and_adaptation_returns(mujoco):
    from mamlbook.rl.evaluate import adaptation_returns, evaluate_methods, test_goals

    goals = test_goals(env="cheetah-vel")
    assert goals.shape == (40, 1) and torch.equal(goals, test_goals(env="cheetah-vel"))
    assert 0 <= goals.min() and goals.max() <= 2
    assert test_goals().shape == (40, 2)  # 2D navigation's, as before
    config = Nav2DConfig(**TINY)
    policy = config.make_policy()
    params = {k: v.detach() for k, v in policy.named_parameters()}
    returns = adaptation_returns(policy, params, goals[:3], 1, 2, horizon=10, env="cheetah-vel")
    assert returns.shape == (2, 3) and (returns < 0).all()
    report = evaluate_methods({"a": (policy, params)}, steps=1, goals=goals[:2], trajectories=2, env="cheetah-vel")
    assert set(report["methods"]) == {"a"}  # no oracle for the cheetah


def _two_processes(rank, folder):
    from pathlib import Path

    trainer = _float64_trainer(True)
    after = []
    for _ in range(2):
        trainer.step()
        after.append({**{k: v.detach().clone() for k, v in trainer.params.items()}, "": trainer.generator.get_state()})
    torch.save(after, Path(folder) / f"rank{rank}.pt")


def _float64_trainer(distributed):
    config = Nav2DConfig(env="cheetah-vel", meta_batch=3, trajectories=2, horizon=10, cg_iters=5)
    trainer = Nav2DTrainer(config, distributed=distributed)
    trainer.policy.to(torch.float64)
    trainer.params = {k: v.detach().to(torch.float64).requires_grad_(True) for k, v in trainer.params.items()}
    return trainer


def test_two_processes_take_one_processes_meta_iterations(mujoco, tmp_path):
    """3 tasks shared 2 + 1 (float64): each process draws every task's starts and keeps its own, so the
    generator ends where one process leaves it and the first step is one process's to rounding (the order
    of the sums over tasks, 6e-12 here). The second step's episodes start from weights that differ by
    that much, and the cheetah's contacts amplify it over the episode: 3e-9 here."""
    from mamlbook.train.distributed import launch_local

    launch_local(_two_processes, 2, str(tmp_path), timeout=300, collective_timeout=20.0)
    one = _float64_trainer(False)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for i, tolerance in enumerate((1e-10, 1e-6)):
        one.step()
        for after in ranks:
            assert torch.equal(after[i].pop(""), one.generator.get_state())
            assert max((after[i][k] - v).abs().max().item() for k, v in one.params.items()) <= tolerance, i


def test_the_command_line_trains_and_evaluates_the_cheetah(mujoco, tmp_path, capsys):
    from mamlbook.cli.main import main

    out = tmp_path / "run"
    argv = ["train", "cheetah-vel", "--out", str(out), "--iterations", "1", "--meta-batch", "2"]
    assert main([*argv, "--trajectories", "2", "--no-progress"]) == 0
    assert (out / "checkpoint.pt").exists()
    assert main(["train", "nav2d", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "holds a 'cheetah-vel' run" in capsys.readouterr().err
    assert main(["eval", "cheetah-vel", str(out), "--steps", "1", "--tasks", "2", "--trajectories", "2"]) == 0
    table = capsys.readouterr().out
    assert "MAML (dice)" in table and "random init" in table and "oracle" not in table
    report = json.loads((out / "evaluation.json").read_text())
    assert len(report["goals"]) == 2 and report["steps"] == [0, 1]
    assert main(["eval", "nav2d", "--run", str(out), "--steps", "1"]) == 2
    assert "holds a 'cheetah-vel' run" in capsys.readouterr().err


def test_without_mujoco_the_command_line_names_the_extra(tmp_path, capsys, monkeypatch):
    from mamlbook.cli.main import main

    monkeypatch.setitem(sys.modules, "mujoco", None)  # `import mujoco` raises ImportError
    argv = ["train", "cheetah-vel", "--out", str(tmp_path / "run"), "--iterations", "1", "--no-progress"]
    assert main(argv) == 2
    assert 'pip install "mamlbook[mujoco]"' in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["eval", "cheetah-vel", str(tmp_path / "run")]) == 2
    assert 'pip install "mamlbook[mujoco]"' in capsys.readouterr().err
    with pytest.raises(ImportError, match="mamlbook\\[mujoco\\]"):
        Nav2DTrainer(Nav2DConfig(**TINY))
