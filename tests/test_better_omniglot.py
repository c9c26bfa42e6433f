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
    runs = {r["label"]: r for r in result["runs"] if r["group"] == "methods" and r["seed"] == 0}
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


def test_seeded_methods_run_each_seed_and_the_ablation_switches_off_one_piece(monkeypatch):
    monkeypatch.setattr(bo, "METHODS", {k: bo.METHODS[k] for k in ("MAML", "ANIL", "MAML++")})
    rows = bo.plan(small=True)
    seeds = {}
    for row in rows:
        seeds.setdefault((row["group"], row["label"]), []).append(row["seed"])
    assert seeds[("methods", "MAML")] == seeds[("methods", "MAML++")] == [0, 1]
    assert seeds[("methods", "ANIL")] == [0], "unseeded methods run once"
    assert len({bo.run_folder(r["config"], 10) for r in rows}) == len(rows), "every run has its own cache folder"
    full = bo.method_config("MAML++", small=True).make_algorithm()
    for row in rows:
        if row["group"] == "ablation":
            algorithm = row["config"].make_algorithm()
            changed = {
                k
                for k in ("msl", "da", "bn_stats", "bn_weights", "cosine", "rule")
                if getattr(algorithm, k) != getattr(full, k)
            }
            assert changed == set(bo.ABLATION[row["piece"]]), row["label"]


def test_the_summary_averages_over_seeds_and_keeps_each_seed(two_methods):
    result = bo.better_omniglot(small=True, progress=False)
    maml = [r for r in result["runs"] if r["group"] == "methods" and r["label"] == "MAML"]
    row = result["methods"]["MAML"]
    assert row["seeds"] == [0, 1] and row["accuracy_by_seed"] == [r["accuracy"] for r in maml]
    assert abs(row["accuracy"] - sum(row["accuracy_by_seed"]) / 2) < 1e-12
    assert set(result["ablation"]) == {f"MAML++ without {p}" for p in bo.ABLATION}
    assert all(v["accuracy_seed_ci95"] is None for v in result["ablation"].values()), "one seed has no spread"
    iterations, curves = bo.val_spread(result["runs"], "MAML++")
    assert iterations == [1, 2] and len(curves) == 2


def test_the_seed_interval_covers_the_mean_95_percent_of_the_time_with_three_seeds():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    draws = torch.randn(4000, 3, generator=gen, dtype=torch.float64)
    covered = 0
    for row in draws.tolist():
        mean, half = bo.seed_interval(row)
        covered += abs(mean) <= half
    assert 0.93 < covered / len(draws) < 0.97, "a normal (1.96) interval would cover only about 0.80"


def test_trained_only_reports_finished_runs_and_trains_nothing(two_methods, tmp_path):
    from mamlbook.study import run_study

    empty = bo.better_omniglot(small=True, progress=False, trained_only=True)
    assert empty["runs"] == [] and len(empty["missing"]) == len(bo.plan(small=True))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("checkpoint.pt"))
    config = bo.method_config("MAML", small=True)
    bo.train_and_test(config, bo.run_folder(config, 10), 10, 2)
    partial = bo.better_omniglot(small=True, progress=False, trained_only=True)
    assert [(r["label"], r["seed"]) for r in partial["runs"]] == [("MAML", 0)]
    assert ("MAML", 0) not in {(m["label"], m["seed"]) for m in partial["missing"]}
    with pytest.raises(ValueError, match="does not take trained_only"):
        run_study("sweep", small=True, trained_only=True)


def test_stability_separates_spread_across_seeds_from_oscillation_within_a_run():
    def run(seed, curve, label="MAML"):
        return {
            "group": "methods",
            "label": label,
            "seed": seed,
            "val_curve": [[50 * i, a] for i, a in enumerate(curve)],
        }

    rising = [0.2, 0.4, 0.5, 0.6, 0.7, 0.8]
    shifted = [a + 0.04 for a in rising]
    zigzag = [0.2, 0.4, 0.5, 0.8, 0.6, 0.8]
    steady = bo.stability([run(0, rising), run(1, shifted)], "MAML")
    assert steady["seeds"] == 2 and abs(steady["spread"] - 4 / 2**0.5) < 1e-9, "two curves 4 points apart"
    assert abs(steady["jitter_late"] - 10) < 1e-9, "10 points per check in the second half"
    shaky = bo.stability([run(0, zigzag), run(1, zigzag)], "MAML")
    assert shaky["spread"] == 0 and shaky["jitter_late"] > steady["jitter_late"]
    assert "spread" not in bo.stability([run(0, rising)], "MAML"), "one seed has no spread"
    with pytest.raises(ValueError, match="too few validation checks"):
        bo.stability([run(0, rising[:2])], "MAML")
