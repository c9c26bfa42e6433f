"""`mamlbook study better-omniglot`: real Omniglot runs, cached by configuration, resumed when cut short."""

import shutil

import pytest

from mamlbook.studies import better_omniglot as bo
from mamlbook.train import Trainer
from mamlbook.train.checkpoint import load_checkpoint

TWO_METHODS = ("MAML", "MAML++")


@pytest.fixture
def two_methods(monkeypatch, tmp_path):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bo, "METHODS", {k: bo.METHODS[k] for k in TWO_METHODS})


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """The small study of two methods, trained once for this module: (its result, its cache folder)."""
    cache = tmp_path_factory.mktemp("better-omniglot") / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAMLBOOK_CACHE", str(cache))
        mp.setattr(bo, "METHODS", {k: bo.METHODS[k] for k in TWO_METHODS})
        result = bo.better_omniglot(small=True, progress=False)
    return result, cache


@pytest.fixture
def studied(two_methods, small_study, tmp_path):
    """A copy of the small study's cache as this test's cache (a test may change it); the study's result."""
    result, cache = small_study
    shutil.copytree(cache, tmp_path / "cache")
    return result


def test_each_method_trains_its_own_algorithm_and_is_scored_with_it(studied):
    result = studied
    runs = {r["label"]: r for r in result["runs"] if r["group"] == "methods" and r["seed"] == 0}
    assert set(runs) == {"MAML", "MAML++"}
    assert runs["MAML++"]["algorithm"] == "mamlpp" and runs["MAML++"]["inner_steps"] == 2
    for r in runs.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and len(r["accuracy_by_step"]) == result["settings"]["test_steps"] + 1
        payload = load_checkpoint(bo.run_folder(bo.method_config(r["label"], small=True), 10))
        assert payload["config"]["algorithm"] == r["algorithm"] and payload["iteration"] == 2
    again = bo.better_omniglot(small=True, progress=False)
    assert again["runs"] == result["runs"], "a second study reads every run from the cache"


def test_every_run_keeps_each_test_tasks_accuracy_at_its_test_step(studied, monkeypatch):
    import json

    from mamlbook.studies import run_study
    from mamlbook.studies.records import BetterOmniglotResult

    monkeypatch.setattr(bo, "ABLATION", {})
    result = run_study("better-omniglot", small=True, progress=False)
    assert isinstance(result, BetterOmniglotResult) and len(result.runs) == 4
    for run in result.runs:
        assert run.per_task is not None and len(run.per_task) == result.settings.test_tasks
        assert sum(run.per_task) / len(run.per_task) == pytest.approx(run.accuracy, abs=1e-6), run.label
    # a run scored before per-task scores is scored again from its checkpoint, not trained again;
    # with no time to score it, it is reported as it was rather than as missing
    folder = bo.run_folder(bo.method_config("MAML", small=True), 10)
    old = json.loads((folder / "result.json").read_text())
    del old["per_task"]
    (folder / "result.json").write_text(json.dumps(old))
    cut = bo.better_omniglot(small=True, progress=False, time_limit=0)
    assert not cut["missing"] and next(r for r in cut["runs"] if r["key"] == folder.name).get("per_task") is None
    monkeypatch.setattr(Trainer, "step", lambda self: pytest.fail("the finished run was trained again"))
    again = bo.better_omniglot(small=True, progress=False)
    rescored = next(r for r in again["runs"] if r["key"] == folder.name)
    first = next(r for r in result.runs if r.key == folder.name)
    assert rescored["per_task"] == first.per_task and rescored["accuracy"] == first.accuracy


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
    assert main([*args, "--eval-every", "1", "--eval-tasks", "2"]) == 0
    payload = load_checkpoint(out)
    assert payload["config"]["eval_tasks"] == 2 and len(payload["history"]) == 2
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


def test_the_summary_averages_over_seeds_and_keeps_each_seed(studied):
    result = studied
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
    from mamlbook.studies import run_study

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


def test_the_full_plan_trains_every_method_and_every_piece_over_every_seed():
    budget, full = bo.plan(small=True), bo.plan(small=True, full=True, device="cuda")
    seeds = {0, 1}  # the small plan's
    for label in bo.METHODS:
        assert {r["seed"] for r in full if r["label"] == label} == seeds
    pieces = {r["piece"] for r in full if r["group"] == "ablation"}
    assert pieces == {"MSL", "DA", "BNRS", "BNWB", "LSLR", "CA"}
    assert len(full) == (len(bo.METHODS) + len(pieces)) * len(seeds)
    assert all(r["config"].device == "cuda" for r in full)
    assert [r["seed"] for r in full] == sorted(r["seed"] for r in full), "seed by seed: a cut study keeps whole seeds"
    no_lslr = next(r["config"] for r in full if r.get("piece") == "LSLR")
    assert no_lslr.algorithm == "mamlpp" and no_lslr.algorithm_options == {"rule": "sgd"}
    # The CPU plan's runs are the full plan's runs on the CPU: same configuration, same cache key.
    full_cpu = {(r["label"], r["seed"]): bo.run_folder(r["config"], 10) for r in bo.plan(small=True, full=True)}
    assert all(full_cpu[(r["label"], r["seed"])] == bo.run_folder(r["config"], 10) for r in budget)
    assert bo.run_folder(full[0]["config"], 10) != full_cpu[(full[0]["label"], full[0]["seed"])]


def test_a_time_limit_of_zero_trains_nothing_and_lists_every_run_as_missing(two_methods):
    result = bo.better_omniglot(small=True, progress=False, time_limit=0)
    assert result["runs"] == [] and len(result["missing"]) == len(bo.plan(small=True))
    with pytest.raises(ValueError, match="jobs"):
        bo.better_omniglot(small=True, progress=False, jobs=0)
    with pytest.raises(ValueError, match="time_limit"):
        bo.better_omniglot(small=True, progress=False, time_limit=-1)


def test_parallel_jobs_train_in_worker_processes_into_the_same_cache(two_methods, monkeypatch):
    monkeypatch.setattr(bo, "ABLATION", {})
    monkeypatch.setattr(bo, "METHODS", {"MAML": bo.METHODS["MAML"]})  # two runs: one for each worker
    result = bo.better_omniglot(small=True, progress=False, jobs=2)
    assert result["missing"] == [] and len(result["runs"]) == len(bo.plan(small=True))
    assert all(r["device"] == "cpu" and r["trained_on"] for r in result["runs"])
    for row in bo.plan(small=True):
        assert (bo.run_folder(row["config"], 10) / "result.json").exists()
    again = bo.better_omniglot(small=True, progress=False, jobs=2, time_limit=0)
    assert again["runs"] == result["runs"], "finished runs are read back even when no run may start"


def _run(label, seed, accuracy, device=None, group="methods", seconds=60.0):
    run = {
        "group": group,
        "label": label,
        "seed": seed,
        "inner_steps": 1,
        "accuracy": accuracy,
        "accuracy_ci95": 0.01,
        "accuracy_10": accuracy,
        "accuracy_10_ci95": 0.01,
        "train_seconds": seconds,
    }
    return run if device is None else {**run, "device": device}


def test_pooling_averages_replicates_within_a_seed_before_the_seed_interval():
    cpu = {"runs": [_run("MAML", 0, 0.80), _run("MAML", 1, 0.84, seconds=120.0)], "missing": []}
    gpu = {
        "runs": [_run("MAML", 0, 0.90, "cuda", seconds=5.0), _run("MAML++", 0, 0.85, "cuda")],
        "missing": [
            {"group": "methods", "label": "MAML", "seed": 1},
            {"group": "methods", "label": "MAML++", "seed": 1},
        ],
    }
    pooled = bo.pool(cpu, gpu)
    maml = pooled.methods["MAML"]
    assert maml.accuracy_by_seed == pytest.approx([0.85, 0.84]), "seed 0's replicates averaged"
    assert maml.accuracy == pytest.approx(0.845) and maml.runs == 3 and maml.seeds == [0, 1]
    mean, half = bo.seed_interval([0.85, 0.84])
    assert maml.accuracy_seed_ci95 == pytest.approx(half), "two seeds, not three runs"
    assert maml.train_seconds == pytest.approx(90.0), "the GPU run's shared-card time is left out"
    assert pooled.methods["MAML++"].train_seconds is None
    (pair,) = pooled.replicates
    assert pair.accuracy == {"cpu": 0.80, "cuda": 0.90} and pair.difference == pytest.approx(0.10)
    missing = [(m.group, m.label, m.seed) for m in pooled.missing]
    assert missing == [("methods", "MAML++", 1)], "MAML seed 1 ran on the CPU"


def test_the_confirmation_runs_maml_and_the_picked_variant_on_seeds_the_study_never_used(two_methods):
    rows = bo.plan(confirm=True)
    assert {r["seed"] for r in rows}.isdisjoint(bo.SEEDS), "fresh seeds, or the pick is judged on its own data"
    assert {(r["label"], r["seed"]) for r in rows} == {(label, s) for label in bo.CONFIRM for s in bo.CONFIRM_SEEDS}
    variant = next(r["config"] for r in rows if r["label"] == "MAML++ without CA")
    assert variant.algorithm == "mamlpp" and variant.algorithm_options == {"cosine": False}
    # The variant is the ablation's row, only the seed differs: same configuration, same cache key.
    ablation_row = next(r["config"] for r in bo.plan(full=True) if r["label"] == "MAML++ without CA")
    assert bo.run_folder(variant, 600) != bo.run_folder(ablation_row, 600)
    assert bo.run_folder(bo.method_config("MAML++", variant.seed, switched_off={"cosine": False}), 600) == (
        bo.run_folder(variant, 600)
    )
    with pytest.raises(ValueError, match="pick one"):
        bo.plan(full=True, confirm=True)
    result = bo.better_omniglot(small=True, progress=False, confirm=True)
    assert result["settings"]["confirm"] and not result["methods"] and not result["ablation"]
    table = result["confirm"]
    assert set(table) == set(bo.CONFIRM) and table["MAML"]["seeds"] == list(bo.CONFIRM_SEEDS[:2])


def test_the_paired_gap_pairs_seed_by_seed_and_skips_unshared_seeds():
    table = {
        "MAML": {"seeds": [3, 4, 5], "accuracy_by_seed": [0.80, 0.90, 0.70]},
        "V": {"seeds": [3, 4], "accuracy_by_seed": [0.82, 0.93]},
    }
    gap = bo.paired_gap(table, "V", "MAML")
    assert gap["seeds"] == [3, 4] and gap["deltas"] == pytest.approx([2.0, 3.0])
    mean, half = bo.seed_interval([2.0, 3.0])
    assert gap["mean"] == pytest.approx(2.5) and gap["ci95"] == pytest.approx(half)
    # Unpaired, the seeds' 10-point spread would swamp a 2.5-point gap; paired, it does not.
    assert gap["ci95"] < 10
    with pytest.raises(ValueError, match="share no seed"):
        bo.paired_gap({**table, "W": {"seeds": [9], "accuracy_by_seed": [0.5]}}, "W", "MAML")
