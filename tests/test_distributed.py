"""Task-parallel meta-training on torch.distributed (gloo, 2 local processes): the meta-gradient and a
whole run equal the single-process ones, resume may change the number of processes, a dead rank stops
the others, disagreeing ranks are a clear error, and a run folder holds one run at a time.

Every multi-process test runs under a deadline (`launch_local`'s timeout, subprocess timeouts), and
every collective under a 20 s process-group timeout, so nothing here can hang CI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import mamlbook as mb
from mamlbook.models import Conv4
from mamlbook.train.distributed import (
    LOCK_NAME,
    DistributedError,
    RunLockedError,
    _start_time,
    acquire_lock,
    free_port,
    launch_local,
    release_lock,
    shares,
)

WORLD = 2
COLLECTIVE_TIMEOUT = 20.0

STRATEGIES = ("loop", "vmap", "threads", "folded")
ALGORITHMS = ("maml", "fomaml", "metasgd", "anil", "mamlpp")
TASKS = (4, 5)  # even and uneven shares of 2 processes
CASES = [
    *(("sine", s, a, b) for s in STRATEGIES for a in ALGORITHMS for b in TASKS),
    *(("sine", s, "reptile", b) for s in ("loop", "vmap") for b in TASKS),
    # batch norm on batch statistics; MAML++'s per-step batch norm with running statistics
    *(("conv4", s, a, b) for s, a in [("loop", "maml"), ("folded", "maml"), ("loop", "mamlpp")] for b in TASKS),
]


def main(argv):
    """`mamlbook ARGV` in this process (imported late: the launched processes import this module)."""
    from mamlbook.cli import main as cli

    return cli(argv)


class RandomImages:
    """3-way 1-shot tasks of random 16x16 images, small enough for Conv4 in float64."""

    loss = "ce"

    def sample(self, batch_size, generator=None):
        return mb.TaskBatch(
            torch.rand(batch_size, 3, 1, 16, 16, generator=generator),
            torch.arange(3).repeat(batch_size, 1),
            torch.rand(batch_size, 6, 1, 16, 16, generator=generator),
            torch.randint(0, 3, (batch_size, 6), generator=generator),
        )


class Offset:
    """Sinusoid tasks shifted by a per-process offset: ranks that draw different data."""

    loss = "mse"

    def __init__(self, shift):
        self.shift = shift

    def sample(self, batch_size, generator=None):
        b = mb.Sinusoid(k_shot=5).sample(batch_size, generator)
        return mb.TaskBatch(b.support_x, b.support_y + self.shift, b.query_x, b.query_y + self.shift)


class Poisoned:
    """Sinusoid tasks whose last task has a NaN target: only the last rank's share diverges."""

    loss = "mse"

    def sample(self, batch_size, generator=None):
        b = mb.Sinusoid(k_shot=5).sample(batch_size, generator)
        b.query_y[-1] = float("nan")
        return b


def case_trainer(case, distributed, out=None):
    """One step's Trainer for a case: float64, 2 inner steps (MAML++'s multi-step loss, second order)."""
    model, strategy, algorithm, tasks = case
    options = {"first_order_iterations": 0} if algorithm == "mamlpp" else {}
    config = mb.TrainConfig(
        meta_batch=tasks,
        inner_steps=2,
        k_shot=5,
        dtype="float64",
        strategy=strategy,
        algorithm=algorithm,
        algorithm_options=options,
        eval_tasks=2,
        iterations=10,
        seed=11,
        inner_lr=0.1 if model == "conv4" else 0.01,
    )
    if model == "conv4":
        torch.manual_seed(0)
        objects = {"model": Conv4(n_way=3, hidden=8, image_size=16), "tasks": RandomImages()}
        return mb.Trainer(config, out, distributed=distributed, **objects)
    return mb.Trainer(config, out, distributed=distributed)


def gradients(trainer):
    named = [*trainer.params.items(), *((f"rate:{k}", v) for k, v in trainer.rates.items())]
    return {k: None if v.grad is None else v.grad.detach().clone() for k, v in named}


def relative_error(a, b):
    keys = [k for k in b if b[k] is not None]
    assert [k for k in a if a[k] is not None] == keys
    num = sum(((a[k].detach() - b[k].detach()) ** 2).sum() for k in keys)
    den = sum((b[k].detach() ** 2).sum() for k in keys)
    return float((num / den).sqrt())


# ----- one launch of 2 processes for the gradients, the errors and whole runs -----
def train_config(**overrides):
    values = {
        "iterations": 3,
        "meta_batch": 5,
        "eval_every": 2,
        "eval_tasks": 4,
        "checkpoint_every": 2,
        "seed": 3,
        "dtype": "float64",
    }
    return mb.TrainConfig(**{**values, **overrides})


def _worker(rank, folder):
    folder = Path(folder)
    # (a) one step of every case
    results = {}
    for case in CASES:
        trainer = case_trainer(case, distributed=True)
        loss = trainer.step()
        results[case] = {
            "loss": loss,
            "grads": gradients(trainer),
            "params": {k: v.detach().clone() for k, v in trainer.params.items()},
            "strategy": trainer.strategy,
        }
    # (f) the processes disagree: a setting, the data; one diverges; (allowed) initial weights differ
    errors = {}
    base = case_trainer(("sine", "loop", "maml", 4), distributed=False).config.to_dict()
    try:
        mb.Trainer(mb.TrainConfig.from_dict({**base, "meta_lr": 1e-3 * (rank + 1)}), distributed=True)
    except DistributedError as error:
        errors["config"] = str(error)
    trainer = mb.Trainer(mb.TrainConfig.from_dict(base), tasks=Offset(rank), distributed=True)
    try:
        trainer.step()
    except DistributedError as error:
        errors["data"] = str(error)
    trainer = mb.Trainer(mb.TrainConfig.from_dict(base), tasks=Poisoned(), distributed=True)
    before = {k: v.detach().clone() for k, v in trainer.params.items()}
    try:
        trainer.step()
    except mb.DivergenceError as error:
        errors["divergence"] = str(error)
        errors["unchanged"] = all(torch.equal(before[k], v) for k, v in trainer.params.items())
    torch.manual_seed(rank)
    own = mb.Trainer(mb.TrainConfig.from_dict(base), model=mb.SineMLP().double(), distributed=True)
    initial = {k: v.detach().clone() for k, v in own.params.items()}

    # (b) a whole run, recording every write under runs/; (c) resume a 1-process run on 2
    runs = str(folder / "runs")
    writes = []

    def audit(event, args):
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            path, mode, flags = os.fsdecode(args[0]), args[1], args[2] or 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or flags & (
                os.O_WRONLY | os.O_RDWR | os.O_CREAT
            )
            if path.startswith(runs) and writing:
                writes.append((event, path))
        elif event in ("os.rename", "os.remove", "os.mkdir") and os.fsdecode(args[0]).startswith(runs):
            target = args[1] if event == "os.rename" else args[0]  # a rename's target: checkpoint.pt
            writes.append((event, os.fsdecode(target)))

    sys.addaudithook(audit)
    run = mb.Trainer(train_config(), folder / "runs" / "two", distributed=True)
    run.fit(progress=False)
    two = {k: v.detach().clone() for k, v in run.params.items()}
    resumed = mb.Trainer.resume(folder / "runs" / "one", iterations=6)
    resumed.fit(progress=False)
    six = {k: v.detach().clone() for k, v in resumed.params.items()}
    torch.save(
        {"results": results, "errors": errors, "initial": initial, "writes": writes, "two": two, "six": six},
        folder / f"rank{rank}.pt",
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Both ranks' results, the folder, and the single-process run to iteration 3 that they resumed."""
    folder = tmp_path_factory.mktemp("world")
    one = mb.Trainer(train_config(), folder / "runs" / "one")
    one.fit(progress=False)
    single = {"params": {k: v.detach().clone() for k, v in one.params.items()}, "history": list(one.history)}
    launch_local(_worker, WORLD, str(folder), timeout=150, collective_timeout=COLLECTIVE_TIMEOUT)
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return {"ranks": ranks, "folder": folder, "one": single}


def test_shares_are_contiguous_and_as_even_as_possible():
    assert shares(5, 2) == [slice(0, 3), slice(3, 5)]
    assert shares(4, 2) == [slice(0, 2), slice(2, 4)]
    assert [s.stop - s.start for s in shares(10, 4)] == [3, 3, 2, 2]
    with pytest.raises(DistributedError, match="at least one"):
        shares(1, 2)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_distributed_meta_gradient_equals_the_single_process_one(world, case):
    single = case_trainer(case, distributed=False)
    loss = single.step()
    expected = gradients(single)
    ranks = [d["results"][case] for d in world["ranks"]]
    assert ranks[0]["strategy"] == single.strategy
    assert relative_error(ranks[0]["grads"], expected) < 1e-12, case
    assert abs(ranks[0]["loss"] - loss) <= 1e-12 * abs(loss)
    for k, g in ranks[0]["grads"].items():  # every rank holds the same reduced gradient and parameters
        assert (g is None and ranks[1]["grads"][k] is None) or torch.equal(g, ranks[1]["grads"][k]), k
    for k, v in ranks[0]["params"].items():
        assert torch.equal(v, ranks[1]["params"][k]), k


def test_disagreement_and_divergence_are_errors_on_every_rank(world):
    for rank in range(WORLD):
        errors = world["ranks"][rank]["errors"]
        assert "disagree on the run's settings" in errors["config"] and "config.meta_lr = 0.002" in errors["config"]
        assert "rank 1" in errors["config"]
        assert "disagree on the meta-batch" in errors["data"] and "same seed" in errors["data"]
        # one rank's NaN reaches every rank through the all-reduce: all stop together, nothing updated
        assert "diverged at iteration 1: the meta-loss is nan" in errors["divergence"] and errors["unchanged"]
    # different initial weights are not an error: every rank starts from rank 0's
    first, second = (d["initial"] for d in world["ranks"])
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_two_process_run_equals_the_single_process_run_and_only_rank0_writes(world):
    ranks, one = world["ranks"], world["one"]
    assert relative_error(ranks[0]["two"], one["params"]) < 1e-12
    assert all(torch.equal(ranks[0]["two"][k], ranks[1]["two"][k]) for k in one["params"])
    assert ranks[1]["writes"] == [], ranks[1]["writes"]
    assert any(path.endswith("checkpoint.pt") for _, path in ranks[0]["writes"])
    folder = world["folder"] / "runs" / "two"
    names = {p.name for p in folder.iterdir()}
    assert names == {"checkpoint.pt", "metrics.jsonl", "config.json", "run.json", "learning_curve.png"}, names
    assert json.loads((folder / "run.json").read_text())["world_size"] == WORLD
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [2, 3]
    for row, expected in zip(rows, one["history"], strict=True):
        assert abs(row["val_loss_post"] - expected["val_loss_post"]) <= 1e-12 * expected["val_loss_post"]


def test_resume_with_another_number_of_processes_continues_the_same_run(world):
    straight = mb.Trainer(train_config(iterations=6))
    straight.fit(progress=False)
    # 1 -> 2 processes (in the launch), then 2 -> 1 here
    assert relative_error(world["ranks"][0]["six"], straight.params) < 1e-12
    launches = json.loads((world["folder"] / "runs" / "one" / "run.json").read_text())["launches"]
    assert launches == [{"iteration": 0, "world_size": 1}, {"iteration": 3, "world_size": 2}]
    back = mb.Trainer.resume(world["folder"] / "runs" / "two", iterations=6)
    back.fit(progress=False)
    assert back.world_size == 1 and relative_error(back.params, straight.params) < 1e-12


# ----- a process that dies -----
DYING = textwrap.dedent(
    """
    import os
    from datetime import timedelta
    import torch, torch.distributed as dist
    import mamlbook as mb

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds={timeout}))
    config = mb.TrainConfig(iterations=1000, meta_batch=4, eval_every=1000, eval_tasks=2, seed=0)
    trainer = mb.Trainer(config, distributed=True)
    for i in range(1000):
        if i == 3 and dist.get_rank() == 1:
            os._exit(3)
        trainer.step()
    """
)


def test_a_rank_that_dies_stops_the_other_within_bounded_time(tmp_path):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(WORLD)}
    env["OMP_NUM_THREADS"] = "1"
    code = DYING.format(timeout=int(COLLECTIVE_TIMEOUT))
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(WORLD)
    ]
    try:
        codes = [p.wait(timeout=90) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    elapsed = time.monotonic() - started
    assert codes[1] == 3
    assert codes[0] != 0, processes[0].stderr.read()
    assert elapsed < 60, elapsed


# ----- the run-folder lock -----
def write_lock(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    record = {"host": host or socket.gethostname(), "pid": pid, "started": _start_time(pid), "since": "earlier"}
    (folder / LOCK_NAME).write_text(json.dumps(record))


def small_run(iterations=2):
    return mb.TrainConfig(iterations=iterations, meta_batch=2, eval_every=2, eval_tasks=2, seed=0)


def test_a_locked_folder_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        write_lock(tmp_path, live.pid)
        with pytest.raises(RunLockedError, match=f"being written by another run \\(pid {live.pid}"):
            mb.Trainer(small_run(), tmp_path).fit(progress=False)
        args = ["train", "sinusoid", "--iterations", "2", "--out", str(tmp_path), "--no-progress"]
        assert main(args) == 2
        assert f"pid {live.pid}" in capsys.readouterr().err
        assert not (tmp_path / "checkpoint.pt").exists()
    finally:
        live.kill()
        live.wait()
    # its process is gone: the lock is stale, taken over, and removed at the end
    trainer = mb.Trainer(small_run(), tmp_path)
    trainer.fit(progress=False)
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / LOCK_NAME).exists()
    # a lock left by this very process (an earlier crash, a reused pid) is stale too
    write_lock(tmp_path, os.getpid())
    mb.Trainer.resume(tmp_path, iterations=3).fit(progress=False)
    assert not (tmp_path / LOCK_NAME).exists()
    # another host's lock cannot be checked: refused
    write_lock(tmp_path, 1, host="elsewhere.example")
    with pytest.raises(RunLockedError, match="on elsewhere.example"):
        mb.Trainer.resume(tmp_path, iterations=4)


def test_the_lock_is_reentrant_within_a_process_and_removed_when_released(tmp_path):
    lock = acquire_lock(tmp_path)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    acquire_lock(tmp_path)
    release_lock(tmp_path)
    assert lock.exists()
    release_lock(tmp_path)
    assert not lock.exists()


def test_a_second_cli_run_into_a_folder_a_live_run_writes_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "mamlbook", "train", "sinusoid", "--iterations", "1000000", "--out", str(out)]
        + ["--no-progress", "--eval-every", "1000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / LOCK_NAME).exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.1)
        assert main(["train", "sinusoid", "--iterations", "2", "--out", str(out), "--no-progress"]) == 2
        assert f"pid {first.pid}" in capsys.readouterr().err
        assert main(["train", "sinusoid", "--resume", "--out", str(out), "--no-progress"]) == 2
        assert "being written by another run" in capsys.readouterr().err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert (out / LOCK_NAME).exists()  # killed: its lock stays behind, stale
    acquire_lock(out)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    release_lock(out)


def test_nproc_relaunches_the_same_command_under_torchrun(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(subprocess, "call", lambda command: called.append(command) or 0)
    args = ["train", "sinusoid", "--out", str(tmp_path), "--nproc", "2", "--order", "0", "--no-progress"]
    assert main([*args, "--baseline-iterations", "0", "--algorithm", "mamlpp", "--without", "ca"]) == 0
    (command,) = called
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    rest = command[6:]
    assert rest[:3] == ["mamlbook", "train", "sinusoid"] and "--nproc" not in rest
    for pair in (["--out", str(tmp_path)], ["--order", "0"], ["--baseline-iterations", "0"], ["--without", "ca"]):
        assert any(rest[i : i + 2] == pair for i in range(len(rest))), pair
    assert "--no-progress" in rest


@pytest.mark.slow
def test_torchrun_trains_one_run_on_two_processes(tmp_path):
    out = tmp_path / "sine"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}"]
    command += ["-m", "mamlbook", "train", "sinusoid", "--iterations", "4", "--eval-every", "2", "--meta-batch", "5"]
    command += ["--out", str(out), "--no-progress", "--baseline-iterations", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"world size {WORLD}") == 1, result.stdout
    assert result.stdout.count("done: iteration 4") == 1
    assert json.loads((out / "run.json").read_text())["world_size"] == WORLD
    assert not (out / LOCK_NAME).exists()
    single = mb.Trainer(mb.TrainConfig(iterations=4, eval_every=2, meta_batch=5))
    single.fit(progress=False)
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["params"]
    assert relative_error(saved, single.params) < 1e-5  # float32: the same run up to summation order
