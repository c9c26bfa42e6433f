"""Omniglot tasks: shapes, seeding, alphabet splits, rotations, bad input, and Conv4's meta-gradient."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mamlbook import TrainConfig, Trainer, make_task, meta_gradient, meta_loss, params_of, resolve_strategy
from mamlbook.data import load_characters
from mamlbook.models import Conv4
from mamlbook.tasks.omniglot import MINIMAL_SPLITS, Omniglot, distinct_indices

SHARED = Path(os.environ.get("MAMLBOOK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "omniglot"
pytestmark = pytest.mark.skipif(
    not (SHARED / "images_background_small1.zip").exists(),
    reason=f"Omniglot files not found in {SHARED} (set MAMLBOOK_DATA)",
)


@pytest.fixture(scope="module")
def characters(tmp_path_factory):
    """Preprocessed once for the module, in a private cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MAMLBOOK_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("MAMLBOOK_DATA", str(SHARED.parent))
    yield load_characters()
    mp.undo()


def task(characters, **options) -> Omniglot:
    return Omniglot(characters=characters, **{"k_shot": 1, "n_way": 5, **options})


def test_batch_shapes_labels_and_range(characters):
    batch = task(characters, k_shot=2, k_query=3).sample(4, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (4, 10, 1, 28, 28) and batch.query_x.shape == (4, 15, 1, 28, 28)
    assert batch.support_x.dtype == torch.float32 and batch.support_y.dtype == torch.int64
    assert batch.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert batch.query_y[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert 0 <= batch.support_x.min() and batch.support_x.max() <= 1


def test_same_seed_same_tasks(characters):
    tasks = task(characters, k_query=2)
    a = tasks.sample(8, torch.Generator().manual_seed(3))
    b = tasks.sample(8, torch.Generator().manual_seed(3))
    c = tasks.sample(8, torch.Generator().manual_seed(4))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.support_x, c.support_x)


def test_each_label_is_one_class_with_distinct_drawings(characters):
    tasks = task(characters, k_shot=3, k_query=4)
    batch = tasks.sample(16, torch.Generator().manual_seed(1))
    classes = batch.info["classes"]
    assert all(len(set(row.tolist())) == 5 for row in classes)
    bank = tasks.bank.float() / 255  # [C, 20, 28, 28]
    for t in range(16):
        for label in range(5):
            drawings = bank[classes[t, label]]  # [20, 28, 28]
            images = torch.cat(
                [batch.support_x[t, batch.support_y[t] == label], batch.query_x[t, batch.query_y[t] == label]]
            )
            found = [int((drawings - img[0]).abs().flatten(1).sum(1).argmin()) for img in images]
            assert all(torch.equal(drawings[d], img[0]) for d, img in zip(found, images, strict=True))
            assert len(set(found)) == 7  # support and query never share a drawing


def test_splits_are_disjoint_alphabets(characters):
    train = task(characters)
    val, test = train.for_split("val"), train.for_split("test")
    assert train.for_split("train") is train
    names = [set(t.characters.alphabets) for t in (train, val, test)]
    assert names[0] == set(MINIMAL_SPLITS["train"]) and names[2] == {"Japanese_(katakana)"}
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert len(train.characters.alphabets) == 153 and val.num_classes == 42 and test.num_classes == 47


def test_rotations_are_new_classes_in_train_only(characters):
    train = task(characters)
    assert train.num_classes == 4 * 153
    assert torch.equal(train.bank[153 + 7], torch.rot90(train.bank[7], 1, dims=(-2, -1)))
    assert torch.equal(train.bank[3 * 153], torch.rot90(train.bank[0], 3, dims=(-2, -1)))
    assert task(characters, rotations=False).num_classes == 153
    assert train.for_split("test").num_classes == 47


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_way": 50, "split": "test"}, "n_way=50 .* test split has: 47"),
        ({"n_way": 43, "split": "val"}, "n_way=43 .* val split has: 42"),
        ({"k_shot": 15, "k_query": 6}, "15 \\+ 6 = 21 .* a character has: 20"),
        ({"split": "valid"}, "unknown split 'valid'; known splits: train, val, test"),
        ({"setting": "huge"}, "unknown setting 'huge'"),
        ({"n_way": 1}, "n_way \\(N\\) must be an integer >= 2"),
    ],
)
def test_bad_input_names_value_and_limit(characters, options, message):
    with pytest.raises(ValueError, match=message):
        task(characters, **options)


def test_for_split_checks_the_split(characters):
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        task(characters).for_split("dev")
    with pytest.raises(ValueError, match="n_way=45 .* val split has: 42"):
        task(characters, n_way=45).for_split("val")


@pytest.mark.parametrize(("m", "high"), [(2, 20), (5, 612), (10, 20), (20, 20)])
def test_distinct_indices(m, high):
    out = distinct_indices((300, 2), m, high, torch.Generator().manual_seed(0))
    assert out.shape == (300, 2, m) and out.min() >= 0 and out.max() < high
    assert all(len(set(row.tolist())) == m for row in out.view(-1, m))
    assert len(set(out.flatten().tolist())) == high if 600 * m > 5 * high else True


def test_train_config_builds_omniglot(characters):
    config = TrainConfig(
        task="omniglot", model="conv4", k_shot=1, task_options={"n_way": 5}, model_options={"n_way": 5}
    )
    tasks = config.make_task()
    assert isinstance(tasks, Omniglot) and tasks.loss == "ce" and tasks.k_query == 1
    assert isinstance(make_task("omniglot", k_shot=1, n_way=3, split="val"), Omniglot)
    assert resolve_strategy("auto", config.make_model()) == "loop"  # Conv4 has batch norm


def test_conv4_meta_gradient_matches_finite_differences_in_float64(characters):
    """Second-order MAML through training-mode batch norm, checked against the loss itself.

    torch.func's vmap gets this gradient slightly wrong (batch statistics under vmap), an error
    of the size float32 hides; a central difference in float64 sees it.
    """
    torch.manual_seed(0)
    model = Conv4(n_way=3, hidden=6).double()
    params = params_of(model)
    batch = task(characters, n_way=3, k_query=2).sample(2, torch.Generator().manual_seed(5)).to(dtype=torch.float64)
    loss, grads = meta_gradient(model, params, batch, "ce", steps=2, inner_lr=0.4, order=2, strategy="loop")
    direction = {
        k: torch.randn(v.shape, generator=torch.Generator().manual_seed(i), dtype=v.dtype)
        for i, (k, v) in enumerate(params.items())
    }
    eps = 1e-6

    def at(sign: float) -> float:
        moved = {k: (v + sign * eps * direction[k]).detach() for k, v in params.items()}
        return meta_loss(model, moved, batch, "ce", 2, 0.4, order=2, strategy="loop").item()

    numeric = (at(1) - at(-1)) / (2 * eps)
    analytic = sum((grads[k] * direction[k]).sum() for k in params).item()
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_presets():
    from mamlbook.cli.train import named_config
    from mamlbook.train.presets import PRESETS, preset_config

    assert {"omniglot-5w1s", "omniglot-5w5s", "omniglot-20w1s"} <= set(PRESETS)
    paper = preset_config("omniglot-20w1s", "paper")
    assert (paper.inner_steps, paper.inner_lr, paper.meta_batch, paper.iterations) == (5, 0.1, 16, 60_000)
    assert paper.model_options == {"n_way": 20} == paper.task_options
    cpu = named_config("omniglot-5w1s", None, {"iterations": 3})
    assert cpu.device == "cpu" and cpu.iterations == 3 and cpu.inner_lr == 0.4 and cpu.order == 2
    with pytest.raises(ValueError, match="unknown preset size 'tiny'"):
        preset_config("omniglot-5w1s", "tiny")
    with pytest.raises(ValueError, match="--preset needs a named config"):
        named_config("sinusoid", "paper", {})


def test_eval_reports_accuracy_with_ci(characters, tmp_path):
    from mamlbook.reports.run import evaluate_run, format_report

    config = TrainConfig(
        task="omniglot",
        model="conv4",
        k_shot=1,
        task_options={"n_way": 5},
        model_options={"n_way": 5, "hidden": 8},
        eval_tasks=2,
        inner_lr=0.4,
    )
    Trainer(config, tmp_path).save()
    report = evaluate_run(tmp_path, tasks=30, steps=2)
    maml = report["methods"]["MAML"]
    assert len(maml["accuracy_mean"]) == 3 and all(0 <= a <= 1 for a in maml["accuracy_mean"])
    assert maml["accuracy_ci95"][0] > 0
    assert "query accuracy (%, mean ± 95% CI over 30 tasks)" in format_report(report)


def test_full_setting_splits(characters):
    from mamlbook.tasks.omniglot import split_alphabets

    # The minimal set's 8 alphabets stand in for the 30 background ones: every sixth goes to val.
    names = characters.alphabet_names()
    assert split_alphabets(characters, "full", "val") == (names[5],)
    assert set(split_alphabets(characters, "full", "train")) == set(names) - {names[5]}
    assert split_alphabets(characters, "full", "test") == tuple(names)
