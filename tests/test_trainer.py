"""The Trainer: it learns, it beats the pretrained baseline, it resumes exactly, it saves safely."""

import json
import time

import pytest
import torch

import mamlbook as mb
from mamlbook.train.checkpoint import CheckpointError, load_checkpoint
from mamlbook.train.trainer import wall_seconds_of


def small_config(**overrides):
    values = {"iterations": 6, "meta_batch": 4, "eval_every": 2, "eval_tasks": 8, "checkpoint_every": 2, "seed": 3}
    return mb.TrainConfig(**{**values, **overrides})


@pytest.mark.slow
def test_maml_beats_the_pretrained_baseline_on_sinusoid():
    """Finn et al.'s claim at small scale: after one step on K=10 points, MAML's query MSE is far lower.

    Required: MAML below 2.2 and below 0.75x the baseline's, on 300 new tasks (both start near 3).
    """
    iterations = 600
    config = mb.TrainConfig(iterations=iterations, eval_every=iterations, eval_tasks=20, seed=0)
    trainer = mb.Trainer(config)
    trainer.fit(progress=False)
    baseline = mb.pretrain(
        config.make_model(), trainer.tasks, iterations, progress=False, generator=torch.Generator().manual_seed(1)
    )
    batch = trainer.tasks.for_split("test").sample(300, torch.Generator().manual_seed(99))
    maml_mse = mb.adaptation_curve(trainer.model, trainer.params, batch, "mse", 1, 0.01)["loss"][:, 1].mean().item()
    base_mse = mb.adaptation_curve(trainer.model, baseline, batch, "mse", 1, 0.01)["loss"][:, 1].mean().item()
    assert maml_mse < 2.2, maml_mse
    assert maml_mse < 0.75 * base_mse, (maml_mse, base_mse)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, strategy):
    straight = mb.Trainer(small_config(strategy=strategy), tmp_path / "straight")
    straight.fit(progress=False)

    first = mb.Trainer(small_config(strategy=strategy, iterations=3), tmp_path / "split")
    first.fit(progress=False)
    resumed = mb.Trainer.resume(tmp_path / "split", iterations=6)
    assert resumed.iteration == 3
    resumed.fit(progress=False)

    for k in straight.params:
        assert torch.equal(straight.params[k], resumed.params[k]), k
    resumed_rows = {r["iteration"]: r["val_loss_post"] for r in resumed.history}
    assert all(resumed_rows[r["iteration"]] == r["val_loss_post"] for r in straight.history)
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [2, 3, 4, 6]  # 3 was the first run's last; nothing twice


def test_run_folder_holds_checkpoint_metrics_config_and_plot(tmp_path):
    trainer = mb.Trainer(small_config(), tmp_path)
    history = trainer.fit(progress=False)
    assert [r["iteration"] for r in history] == [2, 4, 6]
    for name in ("checkpoint.pt", "metrics.jsonl", "config.json", "learning_curve.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    payload = load_checkpoint(tmp_path)
    assert payload["iteration"] == 6 and set(payload) >= {"params", "optimizer", "generator", "config", "history"}
    assert not list(tmp_path.glob(".*.tmp")), "a temporary checkpoint file was left behind"


def test_validation_tasks_are_fixed_and_held_out():
    a, b = mb.Trainer(small_config()), mb.Trainer(small_config())
    assert torch.equal(a.validation.support_x, b.validation.support_x)
    train_batch = a.tasks.sample(4, torch.Generator().manual_seed(3))
    assert not torch.equal(train_batch.support_x, a.validation.support_x[:4])


def test_truncated_checkpoint_gets_a_clear_error(tmp_path):
    trainer = mb.Trainer(small_config(iterations=2), tmp_path)
    trainer.fit(progress=False)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        mb.Trainer.resume(tmp_path)


def test_checkpoint_from_another_model_is_refused(tmp_path):
    mb.Trainer(small_config(iterations=2), tmp_path).fit(progress=False)
    with pytest.raises(CheckpointError, match="trained for model 'sine-mlp', not 'conv4'"):
        load_checkpoint(tmp_path, expect_model="conv4")
    payload = load_checkpoint(tmp_path)
    wrong = {**payload["config"], "model_options": {"hidden": [20]}}
    trainer = mb.Trainer(mb.TrainConfig.from_dict(wrong))
    with pytest.raises(ValueError, match="parameters do not fit SineMLP|has shape"):
        trainer.load_state(payload)


def test_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoint.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"inner_steps": 0}, "steps must be"),
        ({"inner_steps": -1}, "steps must be"),
        ({"k_shot": 0}, "k_shot"),
        ({"task": "nope"}, "unknown task 'nope'"),
        ({"model": "resnet"}, "unknown model"),
        ({"meta_lr": -1.0}, "meta_lr"),
        ({"order": 5}, "order must be"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_bad_configurations_are_refused_up_front(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_config(**overrides)


def test_interrupt_saves_a_resumable_checkpoint(tmp_path, monkeypatch):
    trainer = mb.Trainer(small_config(), tmp_path)
    original = trainer.step
    calls = {"n": 0}

    def flaky_step():
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original()

    monkeypatch.setattr(trainer, "step", flaky_step)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(progress=False)
    assert load_checkpoint(tmp_path)["iteration"] == 3


def test_fit_without_plot_saves_everything_but_the_figure(tmp_path):
    trainer = mb.Trainer(small_config(), tmp_path)
    trainer.fit(progress=False, plot=False)
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "learning_curve.png").exists()


def _burning(trainer: mb.Trainer, seconds: float = 0.02) -> mb.Trainer:
    """Each meta-iteration also spends `seconds` of CPU time, so a stretch's count is measurable."""
    original = trainer.step

    def step():
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass
        return original()

    trainer.step = step
    return trainer


def test_cpu_time_counts_every_stretch_of_a_resumed_run(tmp_path):
    first = _burning(mb.Trainer(small_config(iterations=3), tmp_path))
    first.fit(progress=False, plot=False)
    assert first.cpu_seconds >= 3 * 0.02
    assert load_checkpoint(tmp_path)["cpu_seconds"] == first.cpu_seconds
    resumed = _burning(mb.Trainer.resume(tmp_path, iterations=6))
    assert resumed.cpu_seconds == first.cpu_seconds, "the checkpoint carries the first stretch's time"
    resumed.fit(progress=False, plot=False)
    assert resumed.cpu_seconds >= first.cpu_seconds + 3 * 0.02
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    counts = [r["cpu_seconds"] for r in rows]
    assert counts == sorted(counts) and counts[-1] <= resumed.cpu_seconds and counts[0] > 0


def test_a_checkpoint_saved_before_cpu_time_was_counted_resumes_with_its_wall_time(tmp_path):
    from mamlbook.train.checkpoint import save_checkpoint

    mb.Trainer(small_config(iterations=4), tmp_path).fit(progress=False, plot=False)
    payload = load_checkpoint(tmp_path)
    del payload["cpu_seconds"]
    save_checkpoint(tmp_path / "checkpoint.pt", payload)
    resumed = mb.Trainer.resume(tmp_path)
    assert resumed.cpu_seconds == wall_seconds_of(payload["history"]) > 0


def test_wall_seconds_of_a_history_adds_the_stretches_of_each_fit():
    rows = [{"iteration": i, "seconds": s} for i, s in [(50, 10.0), (100, 20.0), (150, 9.0), (200, 18.0), (250, 5.0)]]
    assert wall_seconds_of(rows) == 20.0 + 18.0 + 5.0  # fit restarted its clock at 150 and at 250
    assert wall_seconds_of([]) == 0.0
