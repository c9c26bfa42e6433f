"""Task-parallel MAML-RL (`rl.parallel`) on 2 local processes (gloo) against one process.

In float64 at a tiny size (4 or 5 tasks x 2 trajectories, horizon 10), two processes take the same
meta-iterations as one: the same episodes (the generator ends in the same state), the same line-search
decisions, and weights equal to 1e-10 after one and two meta-iterations, by autograd's curvature
("exact") and by hand ("gauss-newton"), for DiCE, LVC, the pretrained baseline's step and PPO. The
all-reduces per meta-iteration are counted against `rl.parallel`'s list. Also: disagreeing processes
are an error, rank 0 writes the run folder and a resumed run goes on, `mamlbook bench --problems nav2d`
times the 2-process step beside the 1-process one, and `mamlbook train nav2d --nproc 2` (torchrun)
trains one run.

Every multi-process test runs under a deadline, and every collective under a 20 s timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mamlbook.rl.curvature as curvature
from mamlbook.rl.parallel import TaskShare
from mamlbook.rl.policies import GaussianMLPPolicy
from mamlbook.rl.rollout import rollout
from mamlbook.rl.trainer import Nav2DConfig, Nav2DTrainer
from mamlbook.train.checkpoint import load_checkpoint
from mamlbook.train.distributed import DistributedError, launch_local

WORLD = 2
COLLECTIVE_TIMEOUT = 20.0
DTYPE = torch.float64
TINY = {"trajectories": 2, "horizon": 10}
# (curvature, estimator, inner steps, outer step, tasks): 5 tasks are shared 3 + 2
CASES = [
    ("exact", "dice", 1, "trpo", 4),
    ("gauss-newton", "dice", 1, "trpo", 4),
    ("gauss-newton", "lvc", 1, "trpo", 5),
    ("exact", "surrogate", 0, "trpo", 5),
    ("gauss-newton", "dice", 1, "ppo", 4),
]
FIVE_CG = {"cg_iters": 5}
# the default ten conjugate-gradient steps, where rounding is amplified (see the test)
DEFAULT_CG = [("exact", "dice", 1, "trpo", 4), ("gauss-newton", "dice", 1, "trpo", 4)]


def float64_trainer(case, settings, distributed):
    way, estimator, inner_steps, outer, tasks = case
    config = Nav2DConfig(
        curvature=way, estimator=estimator, inner_steps=inner_steps, outer=outer, meta_batch=tasks, **TINY, **settings
    )
    trainer = Nav2DTrainer(config, distributed=distributed)
    trainer.policy.to(DTYPE)
    trainer.params = {k: v.detach().to(DTYPE).requires_grad_(True) for k, v in trainer.params.items()}
    return trainer


def two_steps(case, settings, distributed=False):
    """Weights, row (without its time), all-reduces and generator state after each of two steps."""
    trainer = float64_trainer(case, settings, distributed)
    out = []
    for _ in range(2):
        before = 0 if trainer.parallel is None else len(trainer.parallel.calls)
        row = trainer.step()
        out.append(
            {
                "params": {k: v.detach().clone() for k, v in trainer.params.items()},
                "row": {k: v for k, v in row.items() if k != "seconds"},
                "calls": [] if trainer.parallel is None else trainer.parallel.calls[before:],
                "generator": trainer.generator.get_state(),
            }
        )
    return out


def max_difference(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def small_run(folder=None, distributed=None, iterations=2):
    """float32, five conjugate-gradient steps (ten amplify float32's rounding past comparison here)."""
    config = Nav2DConfig(meta_batch=4, iterations=iterations, checkpoint_every=1, **TINY, **FIVE_CG)
    return Nav2DTrainer(config, folder, distributed=distributed)


# ----- one launch of 2 processes -----
def _worker(rank, folder):
    folder = Path(folder)
    results = {("5", case): two_steps(case, FIVE_CG, True) for case in CASES}
    results.update({("10", case): two_steps(case, {}, True) for case in DEFAULT_CG})
    errors = {}
    try:
        Nav2DTrainer(Nav2DConfig(meta_batch=4 + rank, **TINY), distributed=True)
    except DistributedError as error:
        errors["settings"] = str(error)
    try:
        Nav2DTrainer(Nav2DConfig(meta_batch=1, **TINY), distributed=True)
    except DistributedError as error:
        errors["too few tasks"] = str(error)
    # a run folder: two iterations, then resumed to three (read by rank 0, sent to both)
    small_run(folder / "run", distributed=True).fit(progress=False)
    resumed = Nav2DTrainer.resume(folder / "run", distributed=True, iterations=3)
    resumed.fit(progress=False)
    torch.save({"results": results, "errors": errors, "history": resumed.history}, folder / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rl-world")
    launch_local(_worker, WORLD, str(folder), timeout=300, collective_timeout=COLLECTIVE_TIMEOUT)
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return {"ranks": ranks, "folder": folder}


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_two_processes_take_one_processes_meta_iterations(world, case):
    one = two_steps(case, FIVE_CG)
    ranks = [r["results"][("5", case)] for r in world["ranks"]]
    for i in range(2):
        assert max_difference(ranks[0][i]["params"], one[i]["params"]) <= 1e-10, (case, i + 1)
        for k, v in ranks[0][i]["params"].items():  # every rank holds the same weights
            assert torch.equal(v, ranks[1][i]["params"][k]), k
        assert torch.equal(ranks[0][i]["generator"], one[i]["generator"])  # the same episodes were drawn
        row, expected = ranks[0][i]["row"], one[i]["row"]
        for key in ("accepted", "backtracks"):
            assert row.get(key) == expected.get(key), key
        for key in ("loss_before", "loss_after", "kl", "pre_return", "post_return"):
            if expected.get(key) is not None:
                assert row[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("case", DEFAULT_CG, ids=lambda c: c[0])
def test_ten_conjugate_gradient_steps_amplify_summation_order_alike(world, case):
    """With the default ten conjugate-gradient steps on these tiny batches (a KL Hessian of rank far
    below its 10,604 weights, damping 1e-5), the last steps amplify rounding: two processes agree with
    one to 1e-12 after one meta-iteration and about 1e-9 after two. The single process moves as much
    when nothing but the grouping of its own task sums changes ("gauss-newton" summed a task at a
    time instead of four: also 1e-9 after two): the order of the sums, not the split, is the cause."""
    one = two_steps(case, {})
    ranks = [r["results"][("10", case)] for r in world["ranks"]]
    assert max_difference(ranks[0][0]["params"], one[0]["params"]) <= 1e-10
    assert max_difference(ranks[0][1]["params"], one[1]["params"]) <= 1e-7
    assert torch.equal(ranks[0][1]["generator"], one[1]["generator"])
    if case[0] == "gauss-newton":
        saved = curvature.CHUNK_BYTES
        curvature.CHUNK_BYTES = 1  # one task per chunk
        try:
            regrouped = two_steps(case, {})
        finally:
            curvature.CHUNK_BYTES = saved
        assert max_difference(regrouped[0]["params"], one[0]["params"]) <= 1e-10
        assert max_difference(regrouped[1]["params"], one[1]["params"]) <= 1e-7


def test_all_reduces_per_meta_iteration(world):
    """As `rl.parallel` lists them: one per rollout (the steps taken, a maximum), one of 3B + 2 for the
    meta-batch, one of P + 1 for the loss and gradient, one of P per conjugate-gradient product ("exact":
    one more), one of 2 per line-search trial and one of 2 for the returns logged; PPO: one of P + 1 per
    epoch and one of 2 for its last evaluation."""
    parameters = sum(p.numel() for p in GaussianMLPPolicy().parameters())
    for case in CASES:
        way, _, inner_steps, outer, tasks = case
        for step in world["ranks"][0]["results"][("5", case)]:
            count: dict[tuple[str, int], int] = {}
            for call in step["calls"]:
                count[tuple(call)] = count.get(tuple(call), 0) + 1
            row = step["row"]
            assert count.pop(("max", 1)) == 1 + inner_steps
            assert count.pop(("sum", 3 * tasks + 2)) == 1
            if outer == "ppo":
                assert count == {("sum", parameters + 1): Nav2DConfig().ppo_epochs, ("sum", 2): 2}
                continue
            assert count.pop(("sum", parameters + 1)) == 1
            products = count.pop(("sum", parameters))
            assert 1 <= products <= FIVE_CG["cg_iters"] + (way == "exact")
            trials = int(row["backtracks"]) + 1 if row["accepted"] else Nav2DConfig().max_backtracks
            assert count == {("sum", 2): trials + 1}, case


def test_processes_that_disagree_stop_with_an_error_on_every_rank(world):
    for rank in range(WORLD):
        errors = world["ranks"][rank]["errors"]
        assert "disagree on the run's settings" in errors["settings"] and "meta_batch" in errors["settings"]
        assert "at least one" in errors["too few tasks"]


def test_rank_0_writes_the_run_and_a_resumed_run_goes_on(world):
    """The folder of a 2-process run (float32, resumed once on 2 processes) against one process's run."""
    folder = world["folder"] / "run"
    saved = load_checkpoint(folder / "checkpoint.pt")
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert saved["iteration"] == 3 and [json.loads(x)["iteration"] for x in lines] == [1, 2, 3]
    one = small_run(iterations=3)
    one.fit(progress=False)
    assert torch.equal(saved["generator"], one.generator.get_state())
    for k, v in one.params.items():
        assert torch.allclose(saved["params"][k], v.detach(), rtol=1e-4, atol=1e-5), k
    for mine, theirs in zip(world["ranks"][0]["history"], one.history, strict=True):
        assert mine["pre_return"] == pytest.approx(theirs["pre_return"], rel=1e-4)
        assert mine["backtracks"] == theirs["backtracks"]
    assert not list(folder.glob("*.tmp*"))


# ----- without processes -----
class _Steps:
    """A stand-in for the process group: the meta-batch's steps taken, as all-reduced."""

    def __init__(self, steps):
        self.steps = steps

    def max(self, n):
        assert n <= self.steps
        return self.steps


@pytest.mark.parametrize("goals", [[[0.005, 0.005], [0.004, -0.003], [0.3, -0.2], [-0.4, 0.1]], [[0.005, 0.005]] * 4])
def test_a_share_samples_what_one_process_samples(goals):
    """A policy that stays put reaches the goals near the start at the first step: the first share
    ends at once, the second runs on (or, all near, the meta-batch ends at once). Each share's episodes
    are the full batch's, and its generator ends where one process's does."""
    policy = GaussianMLPPolicy().to(DTYPE)
    with torch.no_grad():
        policy.mean[-1].weight.zero_()
        policy.log_std.fill_(-10.0)
    params = dict(policy.named_parameters())
    goals = torch.tensor(goals, dtype=DTYPE)
    generator = torch.Generator().manual_seed(0)
    start = generator.get_state()
    full = rollout(policy, params, goals, 3, generator, horizon=6)
    steps = int(full.mask.sum(-1).max())
    for lo, hi in ((0, 2), (2, 4)):
        own = torch.Generator().set_state(start)
        part = rollout(policy, params, goals, 3, own, horizon=6, share=TaskShare(lo, hi, 4, _Steps(steps)))
        assert torch.equal(own.get_state(), generator.get_state())
        assert torch.equal(part.mask, full.mask[lo:hi]) and torch.equal(part.rewards, full.rewards[lo:hi])
        taken = part.mask.bool()
        for name in ("obs", "actions"):
            assert torch.equal(getattr(part, name)[taken], getattr(full, name)[lo:hi][taken]), name
    assert steps == (1 if goals.abs().max() < 0.01 else 6)


# ----- the bench and the command line -----
def test_the_bench_times_two_processes_beside_one(tmp_path):
    from mamlbook.bench.nav2d import compare_nav2d_step, processes
    from mamlbook.bench.runner import read_rows, write_json
    from mamlbook.cli.bench import nav2d_impls, nav2d_rows

    names = ["gauss-newton", "gauss-newton@2"]
    result = compare_nav2d_step(names, iterations=2, warmup=1, meta_batch=2, trajectories=2, horizon=5)
    assert set(result["seconds"]) == set(names) and result["parallel_speedup"]["gauss-newton@2"] > 0
    assert len(result["collectives"]["gauss-newton@2"]["per_step"]) == 2
    rows = read_rows(write_json(nav2d_rows(result), tmp_path / "bench-nav2d.json", command="test"))
    assert {(r.impl, r.strategy) for r in rows} == {("mamlbook", "gauss-newton"), ("mamlbook", "gauss-newton@2")}
    assert all(r.ms_median > 0 and r.repeat == 2 for r in rows)

    assert nav2d_impls(["mamlbook@2"]) == ["exact@2", "gauss-newton@2"]
    assert nav2d_impls(["mamlbook:gauss-newton", "mamlbook:gauss-newton@2"]) == names
    assert processes("exact@3") == ("exact", 3) and processes("exact") == ("exact", 1)
    for wrong in ("mamlbook@1", "mamlbook:exact@two", "learn2learn@2"):
        with pytest.raises(ValueError, match="unknown impl"):
            nav2d_impls([wrong])
    with pytest.raises(ValueError, match="W >= 2"):
        compare_nav2d_step(["learn2learn@2"], iterations=1)


def test_train_nav2d_under_torchrun_is_one_run(tmp_path):
    """`mamlbook train nav2d --nproc 2` (torchrun): rank 0 prints and writes, and the run is the
    single process's: the same episodes at the first iteration and the same generator state at the end
    (the weights are float32's and ten conjugate-gradient steps on 2 x 2 episodes amplify its rounding)."""
    from mamlbook.cli.main import main

    options = ["--meta-batch", "2", "--trajectories", "2", "--iterations", "2", "--no-progress"]
    assert main(["train", "nav2d", "--out", str(tmp_path / "one"), *options]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mamlbook", "train", "nav2d", "--out", str(tmp_path / "two"), "--nproc", "2"]
    done = subprocess.run([*command, *options], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world size 2" in done.stdout and done.stdout.count("done: iteration 2") == 1
    one, two = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("one", "two"))
    assert two["iteration"] == 2 and torch.equal(one["generator"], two["generator"])
    first = [json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0]) for name in ("one", "two")]
    assert first[1]["pre_return"] == pytest.approx(first[0]["pre_return"], rel=1e-5)
    assert first[1]["loss_before"] == pytest.approx(first[0]["loss_before"], rel=1e-4, abs=1e-6)
