"""Safe under divergence: a non-finite meta-loss stops the run at once, the last good checkpoint is
never overwritten, and a checkpoint survives `kill -9` in the middle of being written."""

import json
import math
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import mamlbook as mb
from mamlbook.cli import main
from mamlbook.reports.run import evaluate_run
from mamlbook.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mamlbook.train.restore import restore_run


def config(**overrides):
    values = {"iterations": 4, "meta_batch": 3, "eval_every": 2, "eval_tasks": 6, "checkpoint_every": 2, "seed": 1}
    return mb.TrainConfig(**{**values, **overrides})


def test_a_run_that_diverges_stops_at_that_iteration_and_keeps_its_last_good_checkpoint(tmp_path):
    mb.Trainer(config(), tmp_path).fit(progress=False)
    before = load_checkpoint(tmp_path)
    assert before["iteration"] == 4

    # A resumed run whose inner step blows up: the first meta-iteration after the checkpoint is non-finite.
    resumed = mb.Trainer.resume(tmp_path, iterations=8, inner_lr=1e6)
    with pytest.raises(mb.DivergenceError, match=r"diverged at iteration 5: .*checkpoint\.pt \(iteration 4\)"):
        resumed.fit(progress=False)
    assert resumed.iteration == 4  # stopped within the iteration that produced the first non-finite value
    assert all(torch.isfinite(v).all() for v in resumed.params.values())

    after = load_checkpoint(tmp_path)
    assert after["iteration"] == 4
    for k, v in before["params"].items():
        assert torch.equal(v, after["params"][k]), k
    # the good checkpoint still loads and evaluates (at the learning rate it was trained with)
    report = evaluate_run(tmp_path, tasks=20, steps=1)
    assert all(math.isfinite(x) for x in report["methods"]["MAML"]["mean"])


def test_the_message_says_what_to_try_and_saving_refuses_non_finite_weights(tmp_path):
    trainer = mb.Trainer(config(inner_lr=1e6), tmp_path)
    with pytest.raises(mb.DivergenceError) as caught:
        trainer.fit(progress=False)
    message = str(caught.value)
    assert "iteration 1" in message and "no checkpoint was saved" in message
    assert "inner learning rate (now 1000000.0)" in message and "clip_grad_norm" in message
    assert not (tmp_path / "checkpoint.pt").exists()

    good = mb.Trainer(config(iterations=2), tmp_path / "good")
    good.fit(progress=False)
    kept = load_checkpoint(tmp_path / "good")["params"]
    with torch.no_grad():
        next(iter(good.params.values())).fill_(float("nan"))
    with pytest.raises(mb.DivergenceError, match="not finite"):
        good.save()
    for k, v in load_checkpoint(tmp_path / "good")["params"].items():
        assert torch.equal(v, kept[k]), k


def test_the_command_line_stops_with_one_line_and_writes_no_nan_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "sinusoid", "--inner-lr", "1e6", "--iterations", "20", "--out", str(out), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "diverged at iteration 1" in err and "Traceback" not in err
    assert not (out / "checkpoint.pt").exists()


def test_an_old_checkpoint_with_nan_weights_is_refused_by_evaluation(tmp_path):
    trainer = mb.Trainer(config(iterations=2))
    trainer.fit(progress=False)
    state = trainer.state()
    state["params"] = {k: torch.full_like(v, float("nan")) for k, v in state["params"].items()}
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match="not finite"):
        restore_run(load_checkpoint(tmp_path))


def test_gradient_clipping_bounds_each_update(tmp_path):
    def sgd(params):
        return torch.optim.SGD(params, lr=1.0)

    trainer = mb.Trainer(config(iterations=1, clip_grad_norm=1e-3), optimizer=sgd)
    start = {k: v.detach().clone() for k, v in trainer.params.items()}
    trainer.step()
    moved = torch.sqrt(sum(((trainer.params[k] - start[k]) ** 2).sum() for k in start))
    assert 0 < moved <= 1e-3 * (1 + 1e-5), moved
    unclipped = mb.Trainer(config(iterations=1), optimizer=sgd)
    unclipped.step()
    free = torch.sqrt(sum(((unclipped.params[k] - start[k]) ** 2).sum() for k in start))
    assert free > 10 * moved  # the bound was active, not vacuous

    code = main(
        ["train", "sinusoid", "--iterations", "2", "--clip-grad-norm", "0.5"]
        + ["--eval-every", "1"]
        + ["--out", str(tmp_path / "cli"), "--no-progress", "--baseline-iterations", "0"]
    )
    assert code == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["clip_grad_norm"] == 0.5
    with pytest.raises(ValueError, match="clip_grad_norm must be positive"):
        config(clip_grad_norm=0)


WRITER = textwrap.dedent(
    """
    import sys, torch
    from mamlbook.train.checkpoint import save_checkpoint
    weights = torch.arange(2_000_000, dtype=torch.float64)  # 16 MB
    i = 0
    while True:
        save_checkpoint(sys.argv[1], {"iteration": i, "params": {"w": weights + i}})
        print(i, flush=True)
        i += 1
    """
)


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "checkpoint.pt"
    for attempt in range(2):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL
        )
        try:
            done = int(writer.stdout.readline())  # one checkpoint is complete
            deadline = time.monotonic() + 60
            # kill while the next write is in flight: its temporary file exists, the rename has not happened
            while not list(tmp_path.glob(f".checkpoint.pt.{writer.pid}.*.tmp")) and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(0.002 * attempt)
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
        assert list(tmp_path.glob(f".checkpoint.pt.{writer.pid}.*.tmp")), "the kill did not land mid-write"
        payload = load_checkpoint(path)  # never a half file under the checkpoint's name
        w, i = payload["params"]["w"], payload["iteration"]
        assert i >= done
        assert w[0] == i and w[-1] == w.numel() - 1 + i  # a whole, consistent write
    # the temporary files the killed writers left are removed by the next save
    save_checkpoint(path, {"iteration": -1, "params": {}})
    assert not list(tmp_path.glob(".*.tmp"))
