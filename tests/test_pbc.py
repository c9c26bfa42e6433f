"""PBC blood-cell images: verified file by file, decoded once, split by cell type; the medical study end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from mamlbook.config import data_root
from mamlbook.data import pbc as data
from mamlbook.data.remote import ChecksumError, DataMissingError
from mamlbook.tasks import PBC, make_task
from mamlbook.tasks import pbc as tasks
from mamlbook.train.checkpoint import load_checkpoint

SHARED = data_root() / "pbc"
pytestmark = pytest.mark.skipif(not (SHARED / data.SUBSET_LIST).exists(), reason="PBC subset not on disk")


@pytest.fixture(scope="module")
def cells() -> tasks.PBCImages:
    return tasks.load_pbc()


def small_copy(tmp_path: Path, monkeypatch) -> Path:
    """Four real images in a data root of their own, with a checksum list of just them (pinned for the test)."""
    lines = (SHARED / data.SUBSET_LIST).read_text().splitlines()
    chosen = [line for line in lines if line.split("  ")[1].startswith(("basophil/", "platelet/"))]
    chosen = chosen[:2] + chosen[-2:]
    for line in chosen:
        name = line.split("  ")[1]
        (tmp_path / "pbc" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / name, tmp_path / "pbc" / name)
    listing = tmp_path / "pbc" / data.SUBSET_LIST
    listing.write_text("\n".join(chosen) + "\n")
    monkeypatch.setitem(data.LIST_SHA256, data.SUBSET_LIST, hashlib.sha256(listing.read_bytes()).hexdigest())
    return tmp_path


def test_the_real_subset_verifies():
    files = data.pbc_files()
    assert files.variant == "subset" and len(files.paths) == 2000 and not files.left_out
    assert files.counts() == {name: 250 for name in data.CLASSES}
    assert files.paths == tuple(sorted(files.paths))


def test_a_changed_or_missing_file_is_named(tmp_path, monkeypatch):
    root = small_copy(tmp_path, monkeypatch)
    files = data.pbc_files(root)
    assert len(files.paths) == 4 and files.counts() == {"basophil": 2, "platelet": 2}
    changed, gone = files.paths[0], files.paths[-1]
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(ChecksumError, match=f"1 changed.*{changed.name}") as error:
        data.pbc_files(root)
    assert data.DOI_URL in str(error.value), "the error says where the data comes from"
    shutil.copyfile(SHARED / "basophil" / changed.name, changed)
    gone.unlink()
    with pytest.raises(DataMissingError, match=f"1 missing.*platelet/{gone.name}"):
        data.pbc_files(root)


def test_an_edited_checksum_list_cannot_vouch_for_the_images(tmp_path, monkeypatch):
    root = small_copy(tmp_path, monkeypatch)
    monkeypatch.setitem(data.LIST_SHA256, data.SUBSET_LIST, "0" * 64)
    with pytest.raises(ChecksumError, match="checksum list itself was changed"):
        data.pbc_files(root)


def test_no_data_says_where_to_get_it_and_that_it_is_not_downloaded(tmp_path):
    with pytest.raises(DataMissingError, match="cannot download it") as error:
        data.pbc_files(tmp_path)
    message = str(error.value)
    assert data.DOI_URL in message and data.ZIP_NAME in message and data.ZIP_FOLDER in message


def test_a_full_copy_keeps_each_image_once_and_drops_the_one_filed_twice():
    listed = data._listed(data.read_checksums(SHARED / data.FULL_LIST))
    assert len(listed) == 17_092, "the macOS metadata file is not an image"
    keep, left_out = data._deduplicate(listed)
    reasons = dict(left_out)
    assert "filed under eosinophil and neutrophil" in reasons["eosinophil/EO_225902.jpg"]
    assert "neutrophil/BNE_191112.jpg" in reasons
    assert len(keep) == 17_092 - len(left_out) == 17_074
    subset = data.read_checksums(SHARED / data.SUBSET_LIST)
    assert set(subset) <= set(keep), "the book's subset is part of the full copy"


def test_splits_are_disjoint_and_cover_the_eight_types():
    tests = []
    for split_id in tasks.SPLITS:
        classes = tasks.split_classes(split_id)
        assert not set(classes["train"]) & set(classes["test"])
        assert sorted(classes["train"] + classes["test"]) == list(data.CLASSES)
        assert len(classes["test"]) == 3 and classes["val"] == tuple(c + tasks.HELD_OUT for c in classes["train"])
        tests.append(set(classes["test"]))
    assert not tests[0] & tests[1], "the two splits hold out different cell types"


def test_validation_holds_out_images_of_the_training_types(cells):
    pbc = PBC(k_shot=1, k_query=15, split="train", split_id=1, data=cells)
    train, val = pbc.sampler, pbc.for_split("val").sampler
    assert train._counts.tolist() == [200] * 5 and val._counts.tolist() == [50] * 5
    assert not set(train.classes.tolist()) & set(val.classes.tolist())
    assert pbc.for_split("test").class_names == tasks.SPLITS[1]["test"]


def test_tasks_have_the_documented_shapes_and_values(cells):
    pbc = PBC(k_shot=2, k_query=3, split="test", split_id=2, data=cells)
    batch = pbc.sample(4, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (4, 6, 3, 28, 28) and batch.query_x.shape == (4, 9, 3, 28, 28)
    assert batch.support_x.dtype == torch.float32 and 0 <= batch.support_x.min() and batch.support_x.max() <= 1
    assert batch.support_y.tolist() == [[0, 0, 1, 1, 2, 2]] * 4 and set(batch.query_y.unique().tolist()) == {0, 1, 2}
    test_ids = {data.CLASSES.index(c) for c in tasks.SPLITS[2]["test"]}
    assert set(batch.info["classes"].flatten().tolist()) <= test_ids


def test_the_same_seed_gives_the_same_tasks(cells):
    pbc = PBC(k_shot=1, k_query=2, split="train", data=cells)
    a, b = (pbc.sample(8, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.info["classes"], b.info["classes"])
    assert not torch.equal(a.query_x, pbc.sample(8, torch.Generator().manual_seed(4)).query_x)


def test_the_decoded_images_are_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    first = tasks.load_pbc()
    cached = tasks.cache_path(first.files, tasks.IMAGE_SIZE, tasks.CROP, "RGB")
    assert cached.exists() and first.images.shape == (2000, 3, 28, 28) and first.images.dtype == torch.uint8

    def no_decoding(*args):
        raise AssertionError("decoded again although the cache matches")

    monkeypatch.setattr(tasks, "_decode", no_decoding)
    monkeypatch.setattr(tasks, "_loaded", {})  # a fresh process: only the file on disk remains
    again = tasks.load_pbc()
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)


def test_a_configuration_that_names_the_full_copy_is_not_run_on_the_subset(cells):
    with pytest.raises(ValueError, match="asks for the full copy"):
        PBC(variant="full", data=cells)


def test_grayscale_uses_pils_luma_weights():
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert tasks.grayscale(rgb).shape == (2, 1, 4, 4) and torch.allclose(tasks.grayscale(rgb), torch.tensor(0.299))


def test_presets_build_and_fit_the_images():
    from mamlbook.cli.train import named_config
    from mamlbook.train.presets import preset_config

    for name, k in (("pbc-3w1s", 1), ("pbc-3w5s", 5)):
        config = preset_config(name)
        assert (config.task, config.k_shot, config.k_query, config.model_options["in_channels"]) == ("pbc", k, 15, 3)
        batch = config.make_task().sample(2, torch.Generator().manual_seed(0))
        assert config.make_model()(batch.support_x[0]).shape == (3 * k, 3)
    assert named_config("pbc-3w5s", None, {"iterations": 3}).iterations == 3
    assert make_task("pbc", k_shot=1, n_way=3, split_id=2).for_split("test").class_names == tasks.SPLITS[2]["test"]


def test_meta_test_adapts_exactly_like_the_reference_curve(cells):
    from mamlbook.functional import params_of
    from mamlbook.models import Conv4
    from mamlbook.studies.medical_methods import adapt_and_score
    from mamlbook.train.evaluate import adaptation_curve

    torch.manual_seed(0)
    model = Conv4(3, 3, 8)
    batch = PBC(k_shot=2, k_query=3, split="test", data=cells).sample(3, torch.Generator().manual_seed(0))
    accuracy, predictions = adapt_and_score(model, params_of(model), None, batch, 2, 0.1, 1)
    reference = adaptation_curve(model, params_of(model), batch, "ce", 2, 0.1, with_accuracy=True)["accuracy"]
    assert torch.allclose(accuracy, reference) and predictions.shape == (3, 9)


def _separable_features(tasks: int = 4, shots: int = 2, queries: int = 5, dim: int = 30):
    """3-way tasks whose classes sit at distinct corners plus small noise: every method must get them right."""
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.eye(dim)[:3]
    sy = torch.arange(3).repeat_interleave(shots).expand(tasks, -1)
    qy = torch.arange(3).repeat_interleave(queries).expand(tasks, -1)
    support = centres[sy] + 0.1 * torch.randn(tasks, 3 * shots, dim, generator=g)
    query = centres[qy] + 0.1 * torch.randn(tasks, 3 * queries, dim, generator=g)
    return support, sy, query, qy


def test_floor_heads_and_nearest_mean_solve_separable_tasks_and_the_untrained_head_guesses():
    from mamlbook.studies.medical_methods import fit_heads, nearest_class_mean

    support, sy, query, qy = _separable_features()
    acc, pred = nearest_class_mean(support, sy, query, qy)
    assert acc.shape == (4, 1) and bool((acc == 1).all()) and bool((pred == qy).all())
    for head in ("linear", "cosine"):
        acc, _ = fit_heads(support, sy, query, qy, (0, 50), 0.05, head)
        assert acc.shape == (4, 2) and bool((acc[:, 1] == 1).all()), head
    linear, _ = fit_heads(support, sy, query, qy, (0, 5), 0.05, "linear")
    assert bool((linear[:, 0] == 1 / 3).all()), "a zero head says class 0 for every query: chance, not knowledge"
    with pytest.raises(ValueError, match="head must be"):
        fit_heads(support, sy, query, qy, (0,), 0.05, "cosine-ish")


def test_the_raw_pixel_floor_reads_pixels_of_the_same_tasks(cells):
    from mamlbook.studies.medical_methods import raw_pixel_floor

    batch = PBC(k_shot=2, k_query=3, split="test", data=cells).sample(3, torch.Generator().manual_seed(0))
    out = raw_pixel_floor(batch, (0, 10), 0.01)
    assert out["ncm"][0].shape == (3, 1) and out["logistic"][0].shape == (3, 2)
    # a task whose query images are its support images (in order) is solved by nearest class mean
    copied = type(batch)(batch.support_x, batch.support_y, batch.support_x, batch.support_y, batch.info)
    assert bool((raw_pixel_floor(copied, (0,), 0.01)["ncm"][0] == 1).all())


def test_augmentation_keeps_shape_range_and_is_fixed_by_its_generator():
    from mamlbook.studies.medical_methods import augment

    x = torch.rand(16, 3, 12, 12)
    a = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, x)
    flat = torch.full((4, 3, 8, 8), 0.5)  # flips and turns leave a flat image flat; jitter only rescales it
    assert torch.allclose(augment(flat, torch.Generator().manual_seed(2)).std(dim=(1, 2, 3)), torch.zeros(4))


def test_the_small_study_runs_end_to_end_and_writes_what_the_chapter_reads(tmp_path, monkeypatch):
    from mamlbook.records import from_data
    from mamlbook.studies import medical, run_study
    from mamlbook.studies.medical_report import cell_name
    from mamlbook.studies.records import MedicalResult, MedicalRun

    monkeypatch.setattr(medical, "study_folder", lambda: tmp_path / "study")
    untouched = medical.medical(small=True, progress=False, time_limit=0)
    assert not untouched["runs"] and len(untouched["missing"]) == len(medical.Study(True, None, False).plan())
    result = run_study("medical", small=True, progress=False)
    assert isinstance(result, MedicalResult)
    assert result.command == "mamlbook study medical --small" and not result.missing
    settings = result.settings
    assert tuple(settings.splits["1"]["test"]) == tasks.SPLITS[1]["test"] and settings.data["images"] == 2000
    cells_ = {cell_name(28, s, k) for s in medical.SPLIT_IDS for k in medical.SHOTS}
    assert set(result.table) == set(medical.METHODS) and result.cells(28) == sorted(cells_, key=result.cells(28).index)
    for method, row in result.table.items():
        assert set(row) == cells_, method
        for cell in row.values():
            assert min(cell.by_seed) <= cell.accuracy <= max(cell.by_seed)
            assert cell.floor in medical.FLOORS
            assert (cell.gain is None) == (method in medical.FLOORS)
            assert (cell.vs_maml is None) == (method == "MAML")
            for interval in (cell.gain, cell.vs_maml):
                if interval is not None:
                    assert interval.low <= interval.difference <= interval.high and interval.tasks == 3
    assert result.table["MAML"][cell_name(28, 1, 1)].seeds == [0, 1]
    assert result.table["Raw pixels: nearest class mean"][cell_name(28, 1, 1)].seeds == [0]
    assert result.run("MAML", 28, 1, 1, 1).seed == 1
    for run in result.runs:
        assert len(run.accuracy_by_step) == len(run.steps) == len(run.ci95_by_step) and len(run.per_task) == 3
        assert set(run.per_class) == set(settings.splits[str(run.split)]["test"])
        assert sum(map(sum, run.confusion["counts"])) == settings.test_tasks * 3 * settings.k_query
    again = medical.medical(small=True, progress=False, trained_only=True)
    typed = [from_data(MedicalRun, r) for r in again["runs"]]
    assert typed == result.runs and not again["missing"], "every job is read back from the cache"


def test_the_small_study_keeps_each_test_tasks_accuracy_and_runs_in_two_processes(tmp_path, monkeypatch):
    from mamlbook.studies import medical

    monkeypatch.setattr(medical, "study_folder", lambda: tmp_path / "study")
    study = medical.Study(True, None, False)
    jobs = [j for j in study.plan() if j.get("seed", 0) == 0 and j.get("split", 1) == 1 and j.get("k_shot", 1) == 1]
    assert {j["kind"] for j in jobs} == {"floor", "meta", "pretrain", "scratch", "omniglot"}
    rows = [row for job in jobs for row in study.run(job)]
    assert {r["method"] for r in rows} == set(medical.METHODS)
    for row in rows:
        per_task = row["per_task"]
        assert len(per_task) == study.tasks, row["method"]
        assert sum(per_task) / len(per_task) == pytest.approx(row["accuracy"], abs=1e-6), row["method"]
    monkeypatch.setattr(medical.Trainer, "step", lambda self: pytest.fail("the finished model was trained again"))
    assert study.run(jobs[1]) == [r for r in rows if r["key"] == study.folder(jobs[1]).name]


def test_a_result_file_carries_the_finished_jobs_to_another_cache(tmp_path, monkeypatch):
    import json

    from mamlbook.studies import medical

    monkeypatch.setattr(medical, "study_folder", lambda: tmp_path / "first")
    first = medical.medical(small=True, progress=False, time_limit=30)
    done = len(first["runs"])
    (tmp_path / "result.json").write_text(json.dumps({"study": "medical", "format": medical.FORMAT, "small": True,
                                                      **first}))  # fmt: skip
    monkeypatch.setattr(medical, "study_folder", lambda: tmp_path / "second")  # a machine with an empty cache
    monkeypatch.setattr(medical.Trainer, "step", lambda self: pytest.fail("a reused job was trained again"))
    again = medical.medical(small=True, progress=False, trained_only=True, reuse=tmp_path / "result.json")
    assert len(again["runs"]) == done and again["missing"] == first["missing"]
    assert [r["per_task"] for r in again["runs"]] == [r["per_task"] for r in first["runs"]]
    other = json.loads((tmp_path / "result.json").read_text())
    other["settings"]["test_tasks"] += 1
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"other settings \(test_tasks\)"):
        medical.medical(small=True, progress=False, trained_only=True, reuse=tmp_path / "other.json")


def test_an_unfinished_job_is_carried_to_another_cache_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from mamlbook.studies import medical

    archive = tmp_path / "medical.carry.tar.gz"
    monkeypatch.setattr(medical, "study_folder", lambda: tmp_path / "first")
    study = medical.Study(True, None, False)
    job = next(j for j in study.plan() if j["kind"] == "meta")
    rows = study.run(job)
    study.results_path(job).unlink()  # trained to its end but not scored: a job cut short
    cut = medical.medical(small=True, progress=False, trained_only=True, carry=archive)
    assert study.folder(job).name in {m["key"] for m in cut["missing"]} and archive.exists()
    monkeypatch.setattr(medical, "study_folder", lambda: tmp_path / "second")  # a machine with an empty cache
    monkeypatch.setattr(medical.Trainer, "step", lambda self: pytest.fail("the carried job was trained again"))
    moved = medical.Study(True, None, False)
    assert not moved.folder(job).exists()
    medical.medical(small=True, progress=False, trained_only=True, carry=archive)
    assert (moved.folder(job) / "checkpoint.pt").read_bytes() == (study.folder(job) / "checkpoint.pt").read_bytes()
    carried = moved.run(job)
    assert [r["per_task"] for r in carried] == [r["per_task"] for r in rows]
    trained = load_checkpoint(moved.folder(job))["cpu_seconds"]  # the first machine's training, not this one's
    assert trained > 0 and {r["train_cpu_seconds"] for r in carried} == {round(trained, 1)}
    stored = json.loads(moved.results_path(job).read_text())
    moved.results_path(job).write_text(json.dumps([{**r, "train_cpu_seconds": 0.5} for r in stored]))
    assert {r["train_cpu_seconds"] for r in moved.run(job)} == {round(trained, 1)}, "a stale count is read anew"


def test_a_job_another_run_is_writing_is_reported_and_the_others_run_on(tmp_path, monkeypatch):
    import json
    import socket
    import subprocess

    from mamlbook.studies import medical
    from mamlbook.train import distributed

    monkeypatch.setattr(medical, "study_folder", lambda: tmp_path / "study")
    study = medical.Study(True, None, False)
    locked = next(j for j in study.plan() if j["kind"] == "meta")
    floor = next(j for j in study.plan() if j["kind"] == "floor")
    monkeypatch.setattr(medical.Study, "plan", lambda self: [locked, floor])
    other = subprocess.Popen(["sleep", "60"])  # the other study process, alive while this one runs
    try:
        study.folder(locked).mkdir(parents=True)
        holder = {"host": socket.gethostname(), "pid": other.pid, "started": distributed._start_time(other.pid)}
        (study.folder(locked) / distributed.LOCK_NAME).write_text(json.dumps(holder))
        result = medical.medical(small=True, progress=False, jobs=1)
    finally:
        other.kill()
        other.wait()
    assert [m["key"] for m in result["missing"]] == [study.folder(locked).name]
    assert result["missing"][0]["error"].startswith("RunLockedError: ")
    assert {r["key"] for r in result["runs"]} == {study.folder(floor).name}, "the next job ran all the same"
