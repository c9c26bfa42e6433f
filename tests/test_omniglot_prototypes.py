"""`mamlbook study omniglot-prototypes`: MAML with the Omniglot chapter's stored configuration, its weights
kept, then ProtoNets and ProtoMAML, every run scored on the same tasks transductively and not."""

import json
from pathlib import Path

import pytest
import torch

from mamlbook.reports.run import META_TEST_SEED
from mamlbook.studies import load_result, run_study, save_result
from mamlbook.studies import omniglot_prototypes as op
from mamlbook.studies.carry import carried
from mamlbook.studies.records import OmniglotPrototypesResult
from mamlbook.train import Trainer
from mamlbook.train.checkpoint import load_checkpoint
from mamlbook.train.evaluate import query_accuracy
from mamlbook.train.runconfig import TrainConfig

STORED = Path(__file__).resolve().parents[1] / "book" / "results" / "omniglot-5w1s-cpu" / "config.json"
TASKS, STEPS = op.SMALL_TEST["tasks"], op.SMALL_TEST["steps"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small study, run once into its own cache and saved with its kept weights beside the file."""
    root = tmp_path_factory.mktemp("prototypes")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAMLBOOK_CACHE", str(root / "cache"))
        result = run_study("omniglot-prototypes", small=True, progress=False, keep=root / "omniglot-prototypes")
        path = save_result(result, root / "omniglot-prototypes.json")
        yield root, path
        # tests that read the cache run inside this context


def test_maml_is_the_chapters_stored_run_and_the_others_change_only_their_algorithm():
    stored = TrainConfig.from_dict(json.loads(STORED.read_text()))
    rows = op.plan()
    assert rows[0]["label"] == "MAML" and rows[0]["seed"] == 0 and rows[0]["config"] == stored
    assert [(r["label"], r["seed"]) for r in rows[1:]] == [
        (label, seed) for seed in (0, 1, 2) for label in ("ProtoNets", "ProtoMAML")
    ], "seed by seed after MAML: a study cut short holds both methods on the seeds it reached"
    for row in rows[1:]:
        config = row["config"].to_dict()
        assert config["algorithm"] == op.METHODS[row["label"]]
        assert {k for k, v in config.items() if v != stored.to_dict()[k]} <= {"algorithm", "seed"}
    assert len({op.run_folder(r["config"], 600) for r in rows}) == len(rows)
    settings = op.settings(False, None, "cpu", 1, 600, 10)
    assert settings["iterations"] == stored.iterations == 2400 and settings["maml_config"] == stored.to_dict()
    assert settings["test_steps"] == {"MAML": 10, "ProtoNets": 0, "ProtoMAML": 10}
    assert op.plan(device="cuda")[0]["config"].device == "cuda"


def test_the_small_study_round_trips_through_its_record(small):
    root, path = small
    result = load_result(path)
    assert isinstance(result, OmniglotPrototypesResult) and result.small
    assert not result.missing and result.complete_with is None
    assert [(r.label, r.seed) for r in result.runs] == [(r["label"], r["seed"]) for r in op.plan(small=True)]
    for run in result.runs:
        assert len(run.per_task) == len(run.per_task_non_transductive) == TASKS
        assert sum(run.per_task) / TASKS == pytest.approx(run.accuracy, abs=1e-6)
        assert sum(run.per_task_non_transductive) / TASKS == pytest.approx(run.accuracy_non_transductive, abs=1e-6)
        assert run.test_steps == (0 if run.label == "ProtoNets" else STEPS)
    maml, protomaml = result.methods["MAML"], result.methods["ProtoMAML"]
    assert maml.against_maml == {} and set(protomaml.against_maml) == {"transductive", "non_transductive"}
    assert protomaml.against_maml["transductive"].seeds == [2, 1], "two ProtoMAML seeds against MAML's one"
    t = [r.per_task for r in result.runs if r.label == "ProtoMAML"]
    maml_t = result.runs[0].per_task
    expected = sum(sum(seed) / TASKS for seed in t) / len(t) - sum(maml_t) / TASKS
    assert protomaml.against_maml["transductive"].difference == pytest.approx(expected)
    gap = maml.transductive_gap
    assert gap.difference == pytest.approx(maml.transductive.mean - maml.non_transductive.mean)
    assert gap.low <= gap.difference <= gap.high and gap.tasks == TASKS


def test_the_kept_weights_load_into_the_model_and_give_the_stored_accuracy(small):
    root, path = small
    result = load_result(path)
    kept = result.kept
    assert (kept.label, kept.seed, kept.dtype) == ("MAML", 0, "float32")
    weights = root / kept.file
    assert weights.stat().st_size == kept.bytes < 1_000_000
    model, params = op.load_kept(kept, root)
    config = TrainConfig.from_dict(kept.config)
    assert all(v.dtype == torch.float32 for v in params.values())
    batch = config.make_task().for_split("test").sample(TASKS, torch.Generator().manual_seed(META_TEST_SEED))
    accuracy = query_accuracy(model, params, batch, "ce", STEPS, config.inner_lr, transductive=True)
    maml = result.runs[0]
    assert accuracy.tolist() == pytest.approx(maml.per_task, abs=1e-6)
    non = query_accuracy(model, params, batch, "ce", STEPS, config.inner_lr, transductive=False)
    assert non.tolist() == pytest.approx(maml.per_task_non_transductive, abs=1e-6)


def test_reuse_counts_an_earlier_files_jobs_as_done_and_brings_the_kept_weights(small, tmp_path, monkeypatch):
    root, path = small
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "fresh"))
    monkeypatch.setattr(Trainer, "step", lambda self: pytest.fail("a reused job was trained again"))
    again = op.omniglot_prototypes(small=True, progress=False, reuse=path, keep=tmp_path / "kept")
    before = load_result(path)
    assert not again["missing"] and [r["per_task"] for r in again["runs"]] == [r.per_task for r in before.runs]
    assert again["kept"]["sha256"] == before.kept.sha256 and (tmp_path / "kept" / op.KEPT_NAME).exists()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(path.read_text()), "small": False}))
    with pytest.raises(ValueError, match="other settings"):
        op.omniglot_prototypes(small=True, progress=False, reuse=other)
    other.write_text(json.dumps({**json.loads(path.read_text()), "study": "better-omniglot"}))
    with pytest.raises(ValueError, match="not a result"):
        op.omniglot_prototypes(small=True, progress=False, reuse=other)


def test_a_time_limit_starts_nothing_and_an_interrupted_job_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(op, "SMALL_SEEDS", (0,))
    cut = op.omniglot_prototypes(small=True, progress=False, time_limit=0)
    assert cut["runs"] == [] and [(m["label"], m["seed"]) for m in cut["missing"]] == [
        ("MAML", 0),
        ("ProtoNets", 0),
        ("ProtoMAML", 0),
    ]
    assert cut["complete_with"].startswith("mamlbook study omniglot-prototypes --small")
    config = op.method_config("MAML", small=True)
    folder = op.run_folder(config, TASKS)
    stopped = Trainer(op.method_config("MAML", small=True, iterations=1), folder)
    stopped.fit(progress=False, plot=False)
    stopped.config = config  # the saved run asks for 2 iterations and holds 1, as one stopped mid-run
    stopped.save()
    first = load_checkpoint(folder)["params"]
    # Carried to a machine with an empty cache: the archive brings the stopped job, not the unstarted ones.
    archive = tmp_path / "omniglot-prototypes.carry.tar.gz"
    op.omniglot_prototypes(small=True, progress=False, trained_only=True, carry=archive)
    assert {name.split("/")[0] for name in carried(archive)} == {folder.name}
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "elsewhere"))
    folder = op.run_folder(config, TASKS)
    assert not folder.exists()
    op.omniglot_prototypes(small=True, progress=False, trained_only=True, carry=archive)
    assert load_checkpoint(folder)["iteration"] == 1 and archive.exists()
    result = op.train_and_score(config, folder, TASKS, STEPS)
    payload = load_checkpoint(folder)
    assert payload["iteration"] == 2 and len(payload["history"]) == 2
    assert any((payload["params"][k] != first[k]).any() for k in first), "the resumed run kept training"
    assert result["test_steps"] == STEPS and (folder / op.WEIGHTS).exists()
    done = op.omniglot_prototypes(small=True, progress=False, trained_only=True)
    assert [(r["label"], r["seed"]) for r in done["runs"]] == [("MAML", 0)] and len(done["missing"]) == 2
    op.omniglot_prototypes(small=True, progress=False, trained_only=True, carry=archive)
    assert not archive.exists(), "the finished job is no longer carried; the others have nothing to carry"
    with pytest.raises(ValueError, match="jobs"):
        op.omniglot_prototypes(small=True, progress=False, jobs=0)
    with pytest.raises(ValueError, match="time_limit"):
        op.omniglot_prototypes(small=True, progress=False, time_limit=-1)


def test_the_command_line_writes_the_result_and_keeps_the_weights_beside_it(small, tmp_path):
    from mamlbook.cli import main

    out = tmp_path / "prototypes.json"
    # the module's cache holds every small run: --trained-only reads them, and keeps MAML's weights
    assert main(["study", "omniglot-prototypes", "--small", "--trained-only", "--no-progress", "--out", str(out)]) == 0
    result = load_result(out)
    assert not result.missing and result.kept.file == "prototypes/maml-seed0.pt"
    assert (tmp_path / result.kept.file).exists()
    empty = tmp_path / "empty.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAMLBOOK_CACHE", str(tmp_path / "none"))
        args = ["study", "omniglot-prototypes", "--small", "--time-limit", "0", "--jobs", "2", "--no-progress"]
        assert main([*args, "--out", str(empty)]) == 0
    pending = load_result(empty)
    assert pending.runs == [] and len(pending.missing) == len(op.plan(small=True)) and pending.kept is None
    assert pending.settings.jobs == 2 and pending.complete_with is not None
