"""`mamlbook study better-omniglot`: real Omniglot runs, cached by configuration, resumed when cut short."""

import pytest

from mamlbook import better_omniglot as bo
from mamlbook.checkpoint import load_checkpoint
from mamlbook.train import Trainer


@pytest.fixture
def two_methods(monkeypatch, tmp_path):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bo, "METHODS", {k: bo.METHODS[k] for k in ("MAML", "MAML++")})


def test_each_method_trains_its_own_algorithm_and_is_scored_with_it(two_methods):
    result = bo.better_omniglot(small=True, progress=False)
    runs = {r["label"]: r for r in result["runs"]}
    assert set(runs) == {"MAML", "MAML++"}
    assert runs["MAML++"]["algorithm"] == "mamlpp" and runs["MAML++"]["inner_steps"] == 2
    for r in runs.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and len(r["accuracy_by_step"]) == result["settings"]["test_steps"] + 1
        payload = load_checkpoint(bo.run_folder(bo.method_config(r["label"], small=True), 10))
        assert payload["config"]["algorithm"] == r["algorithm"] and payload["iteration"] == 2
    again = bo.better_omniglot(small=True, progress=False)
    assert again["runs"] == result["runs"], "a second study reads every run from the cache"


def test_an_interrupted_run_resumes_where_it_stopped(two_methods):
    config = bo.method_config("MAML", small=True)
    folder = bo.run_folder(config, 10)
    cut = Trainer(bo.method_config("MAML", small=True, iterations=1), folder)
    cut.fit(progress=False)
    cut.config = config  # the saved run asks for 2 iterations and holds 1
    cut.save()
    first = load_checkpoint(folder)["params"]
    result = bo.train_and_test(config, folder, 10, 2)
    payload = load_checkpoint(folder)
    assert payload["iteration"] == 2 and len(payload["history"]) == 2
    assert any((payload["params"][k] != first[k]).any() for k in first), "the resumed run kept training"
    assert result["test_steps"] == 1


def test_training_seconds_add_each_resumed_session():
    rows = [{"seconds": 10}, {"seconds": 20}, {"seconds": 5}, {"seconds": 9}]
    assert bo.training_seconds(rows) == 29


def test_a_run_trained_on_the_command_line_is_adopted_not_retrained(two_methods, tmp_path):
    from mamlbook.cli import main

    out = tmp_path / "cli-run"
    args = ["train", "omniglot-5w1s", "--out", str(out), "--no-progress", "--iterations", "2", "--meta-batch", "2"]
    assert main([*args, "--eval-every", "1"]) == 0
    payload = load_checkpoint(out)
    folder = bo.adopt(out, test_tasks=10)
    assert (folder / "checkpoint.pt").exists()
    assert bo.adopt(out, test_tasks=10) == folder, "adopting twice keeps the first copy"
    config = Trainer.resume(folder).config
    bo.train_and_test(config, folder, 10, 1)
    assert load_checkpoint(folder)["params"]["head.weight"].equal(payload["params"]["head.weight"])


def test_a_saved_eval_of_the_finished_run_is_reused_and_a_stale_one_is_not(two_methods, tmp_path):
    import json

    config = bo.method_config("MAML", small=True)
    folder = bo.run_folder(config, 10)
    Trainer(config, folder).fit(progress=False)
    report = {"tasks": 10, "steps": 2, "k_shot": 1, "iteration": 2, "methods": {}}
    (folder / "eval.json").write_text(json.dumps(report))
    assert bo.saved_report(folder, config, 10, 2) == report
    assert bo.saved_report(folder, config, 600, 2) is None, "other test tasks"
    (folder / "eval.json").write_text(json.dumps({**report, "iteration": 1}))
    assert bo.saved_report(folder, config, 10, 2) is None, "an earlier checkpoint's report"
