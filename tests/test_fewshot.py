"""The general N-way K-shot sampler: layout, uneven classes, seeding, splits, errors, image folders, Omniglot."""

from __future__ import annotations

import os
from collections import Counter
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mamlbook.tasks.fewshot as fewshot
from mamlbook.tasks import FewShotClassification
from mamlbook.tasks.omniglot import Omniglot, distinct_indices

SHARED = Path(os.environ.get("MAMLBOOK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "omniglot"


def indexed(counts: list[int], features: tuple[int, ...] = (1, 2, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel is the example's index, and labels giving class c `counts[c]` examples,
    interleaved so that a class's examples are not contiguous: `images: [M, *features]`, `labels: [M]`."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, *[1] * len(features)).expand(-1, *features)
    return images.contiguous(), labels


def index_of(x: torch.Tensor) -> torch.Tensor:
    """The example index encoded in each image of `x: [B, S, *features]`, as [B, S] int64."""
    return x.flatten(2)[..., 0].long()


def check_tasks(tasks: FewShotClassification, labels: torch.Tensor, b: int, seed: int = 0) -> None:
    """Every task: labels 0..N-1 grouped by class, each label one class, all examples distinct and its own."""
    n, k, q = tasks.n_way, tasks.k_shot, tasks.k_query
    batch = tasks.sample(b, torch.Generator().manual_seed(seed))
    assert batch.support_y.tolist() == [torch.arange(n).repeat_interleave(k).tolist()] * b
    assert batch.query_y.tolist() == [torch.arange(n).repeat_interleave(q).tolist()] * b
    classes = batch.info["classes"]
    assert classes.shape == (b, n) and all(len(set(row)) == n for row in classes.tolist())
    support, query = index_of(batch.support_x), index_of(batch.query_x)
    assert torch.equal(labels[support], classes.gather(1, batch.support_y))
    assert torch.equal(labels[query], classes.gather(1, batch.query_y))
    assert all(len(set(row)) == n * (k + q) for row in torch.cat([support, query], 1).tolist())


def test_shapes_label_layout_and_own_class_examples():
    images, labels = indexed([6] * 10, (3, 4, 5))
    tasks = FewShotClassification(images.to(torch.uint8), labels, n_way=4, k_shot=2, k_query=3)
    batch = tasks.sample(5, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (5, 8, 3, 4, 5) and batch.query_x.shape == (5, 12, 3, 4, 5)
    assert batch.support_x.dtype == torch.float32 and batch.support_y.dtype == torch.int64
    assert batch.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert tasks.loss == "ce" and tasks.num_classes == 10 and tasks.images.dtype == torch.uint8
    floats = FewShotClassification(images, labels, n_way=4, k_shot=2, k_query=3)
    same = floats.sample(5, torch.Generator().manual_seed(0))
    assert torch.equal(batch.support_x.mul(255).round(), same.support_x)  # uint8 i comes back as i / 255
    assert torch.equal(batch.query_x, same.query_x / 255)
    check_tasks(floats, labels, 50)


def test_vectors_and_float_images_are_kept():
    images, labels = indexed([5, 5, 5], (7,))
    images = images.double()
    tasks = FewShotClassification(images, labels, n_way=3, k_shot=1, k_query=4)
    assert tasks.images is images
    batch = tasks.sample(4, torch.Generator().manual_seed(1))
    assert batch.support_x.shape == (4, 3, 7) and batch.query_x.dtype == torch.float64
    check_tasks(tasks, labels, 40)


@pytest.mark.parametrize(("k_shot", "k_query"), [(1, 1), (2, 3), (1, 9)])
def test_uneven_classes_give_distinct_examples_of_their_own_class(k_shot, k_query):
    counts = [10, 3 + k_shot + k_query, k_shot + k_query, 40, 100, 17]
    images, labels = indexed(counts)
    tasks = FewShotClassification(images, labels, n_way=4, k_shot=k_shot, k_query=k_query)
    check_tasks(tasks, labels, 200)


def test_uneven_classes_are_sampled_uniformly():
    """Each class's ordered (support, query) pair is uniform over its own examples' ordered pairs.

    Classes of 2 and 3 examples take the masked top-k path, classes of 5 and 9 draw with
    replacement and redraw; a chi-square statistic per class stays within a wide band of its mean.
    """
    counts = [2, 3, 5, 9]
    images, labels = indexed(counts)
    tasks = FewShotClassification(images, labels, n_way=4, k_shot=1, k_query=1)
    tasks_per_draw, draws = 3000, 4
    g = torch.Generator().manual_seed(0)
    seen: dict[int, Counter] = {c: Counter() for c in range(4)}
    for _ in range(draws):
        batch = tasks.sample(tasks_per_draw, g)
        pairs = torch.stack([index_of(batch.support_x), index_of(batch.query_x)], -1)  # [B, N, 2]
        for t_classes, t_pairs in zip(batch.info["classes"].tolist(), pairs.tolist(), strict=True):
            for c, pair in zip(t_classes, t_pairs, strict=True):
                seen[c][tuple(pair)] += 1
    for c, count in enumerate(counts):
        members = (labels == c).nonzero().flatten().tolist()
        cells = list(permutations(members, 2))
        assert set(seen[c]) == set(cells)  # every ordered pair of the class's own examples, and nothing else
        expected = tasks_per_draw * draws / len(cells)
        chi2 = sum((seen[c][cell] - expected) ** 2 / expected for cell in cells)
        df = len(cells) - 1
        assert chi2 < df + 6 * (2 * df) ** 0.5 + 10, (count, chi2, df)


def test_every_example_of_a_small_class_appears_with_even_frequency():
    counts = [5, 60, 7, 300]
    images, labels = indexed(counts)
    tasks = FewShotClassification(images, labels, n_way=2, k_shot=2, k_query=3)  # m = 5: topk below 25
    batch = tasks.sample(20000, torch.Generator().manual_seed(2))
    drawn = torch.cat([index_of(batch.support_x), index_of(batch.query_x)], 1).flatten()
    frequency = torch.bincount(drawn, minlength=len(labels)).float()
    picked = torch.bincount(batch.info["classes"].flatten(), minlength=4).float()
    for c, count in enumerate(counts):
        mine = frequency[labels == c]
        expected = picked[c] * 5 / count
        assert (mine > 0).all() and mine.sum() == picked[c] * 5
        assert ((mine - expected).abs() < 6 * expected.sqrt() + 3).all(), (count, mine.min(), mine.max(), expected)


def test_distinct_below_rows_are_distinct_and_in_range():
    counts = torch.tensor([[3, 4, 50], [9, 1000, 16]])
    out = fewshot.distinct_below(counts, 3, torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 3)
    assert (out >= 0).all() and (out < counts.unsqueeze(-1)).all()
    assert all(len(set(row)) == 3 for row in out.view(-1, 3).tolist())


@pytest.mark.parametrize("counts", [[4, 9, 12, 30, 6], [8] * 5])
def test_same_seed_same_tasks_different_seed_different_tasks(counts):
    images, labels = indexed(counts)
    tasks = FewShotClassification(images, labels, n_way=3, k_shot=2, k_query=2)
    a = tasks.sample(16, torch.Generator().manual_seed(3))
    b = tasks.sample(16, torch.Generator().manual_seed(3))
    c = tasks.sample(16, torch.Generator().manual_seed(4))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert torch.equal(a.info["classes"], b.info["classes"])
    assert not torch.equal(a.support_x, c.support_x)


def test_splits_are_disjoint_and_share_the_tensors():
    images, labels = indexed([6] * 12)
    splits = {"train": range(0, 7), "val": [7, 8], "test": [9, 10, 11]}
    train = FewShotClassification(images, labels, n_way=2, k_shot=1, k_query=2, splits=splits)
    val, test = train.for_split("val"), train.for_split("test")
    assert train.for_split("train") is train and val.split == "val" and test.for_split("val").split == "val"
    assert (val.n_way, val.k_shot, val.k_query, val.num_classes) == (2, 1, 2, 2)
    assert val.images is train.images and val._examples is train._examples  # shared, not copied
    drawn = [
        set(t.sample(200, torch.Generator().manual_seed(0)).info["classes"].flatten().tolist())
        for t in (train, val, test)
    ]
    assert drawn == [set(range(7)), {7, 8}, {9, 10, 11}]
    check_tasks(test, labels, 30)


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ({"train": [0, 1, 2], "val": [2, 3]}, "class 2 is in both the train and the val split"),
        ({"train": [0, 1, 1]}, "class 1 is listed twice in the train split"),
        ({"train": [0, 1], "dev": [2]}, "unknown split 'dev' in splits"),
        ({"train": [0, "cat"]}, "splits name class 'cat', but there are no class_names"),
        ({"train": [0, 1.5]}, "splits must list class ids"),
    ],
)
def test_bad_splits_are_refused(splits, message):
    images, labels = indexed([4] * 5)
    with pytest.raises(ValueError, match=message):
        FewShotClassification(images, labels, n_way=2, splits=splits)


def test_split_errors():
    images, labels = indexed([4] * 5)
    tasks = FewShotClassification(images, labels, n_way=2)
    with pytest.raises(ValueError, match="there is no val split: splits were given for train only"):
        tasks.for_split("val")
    with pytest.raises(ValueError, match="unknown split 'dev'; known splits: train, val, test"):
        tasks.for_split("dev")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        FewShotClassification(images, labels, split="valid")
    with pytest.raises(ValueError, match="the val split is empty"):
        FewShotClassification(images, labels, n_way=2, splits={"train": [0, 1, 2], "val": []}).for_split("val")
    with pytest.raises(ValueError, match="n_way=4 asks for more classes than the test split has: 2"):
        FewShotClassification(images, labels, n_way=4, splits={"train": [0, 1, 2, 3], "test": [4, 5]}, split="test")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_way": 6}, "n_way=6 asks for more classes than the train split has: 5"),
        (
            {"k_shot": 2, "k_query": 2},
            "2 \\+ 2 = 4 asks for more examples than class 'small' \\(id 3\\) of the train split has: 3",
        ),
        ({"n_way": 1}, "n_way \\(N\\) must be an integer >= 2"),
        ({"k_shot": 0}, "k_shot \\(K\\) must be an integer >= 1"),
    ],
)
def test_bad_counts_name_the_value_and_the_limit(options, message):
    images, labels = indexed([5, 6, 5, 3, 9])
    names = ["a", "b", "c", "small", "e"]
    with pytest.raises(ValueError, match=message):
        FewShotClassification(images, labels, class_names=names, **{"n_way": 2, **options})


def test_bad_data_is_refused():
    images, labels = indexed([4] * 3)
    with pytest.raises(ValueError, match="disagree on the number of examples: 11 != 12"):
        FewShotClassification(images, labels[:-1], n_way=2)
    with pytest.raises(ValueError, match="labels must be a 1-D integer tensor"):
        FewShotClassification(images, labels.float(), n_way=2)
    with pytest.raises(ValueError, match="images must be uint8 .* or floating point, got torch.int64"):
        FewShotClassification(images.long(), labels, n_way=2)
    with pytest.raises(ValueError, match="k_shot \\+ k_query = 1 \\+ 1 = 2 .* class 7 of the train split has: 0"):
        FewShotClassification(images, labels, n_way=2, splits={"train": [0, 7]})
    with pytest.raises(ValueError, match="class 9 of the train split has: 0"):
        FewShotClassification(images, labels, n_way=2, splits={"train": [0, 9]}, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="there are no examples"):
        FewShotClassification(images[:0], labels[:0], n_way=2, splits={"train": [0, 1]})


# Image folders ---------------------------------------------------------------------------------


def gray(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.uint8)).convert("RGB")


def write_folder(root: Path, sizes: dict[str, int]) -> Path:
    """`sizes[name]` 8x6 grey PNGs per class, pixel (x, y) = 10*y + x + 50*class + image."""
    for c, (name, count) in enumerate(sizes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            values = 10 * np.arange(6)[:, None] + np.arange(8)[None, :] + 50 * c + i
            gray(values).save(root / name / f"{i:02d}.png")
    return root


def test_from_folder_crops_resizes_and_converts(tmp_path):
    root = write_folder(tmp_path / "pets", {"dog": 3, "cat": 4, "eel": 2})
    (root / "cat" / "notes.txt").write_text("not an image")
    tasks = FewShotClassification.from_folder(root, size=4, crop=4, mode="L", n_way=2, k_shot=1, k_query=1)
    assert tasks.class_names == ("cat", "dog", "eel")
    assert tasks.images.shape == (9, 1, 4, 4) and tasks.images.dtype == torch.uint8
    assert tasks.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    # the centre 4x4 of an 8x6 image: rows 1..4, columns 2..5; "cat" is class 1 when written, image 2
    centre = 10 * torch.arange(1, 5)[:, None] + torch.arange(2, 6)[None, :] + 50 + 2
    assert torch.equal(tasks.images[2, 0], centre.to(torch.uint8))
    rgb = FewShotClassification.from_folder(root, size=3, mode="RGB", n_way=3, k_shot=1, k_query=1, progress=False)
    assert rgb.images.shape == (9, 3, 3, 3)
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])  # grey stays grey
    batch = rgb.sample(2, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (2, 3, 3, 3, 3) and batch.support_x.max() <= 1


def test_from_folder_splits_by_name(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 2, "b": 2, "c": 2, "d": 3})
    train = FewShotClassification.from_folder(
        root, size=2, splits={"train": ["a", "b"], "test": ["c", "d"]}, n_way=2, k_shot=1, k_query=1
    )
    test = train.for_split("test")
    assert set(test.sample(20, torch.Generator().manual_seed(0)).info["classes"].flatten().tolist()) == {2, 3}
    with pytest.raises(ValueError, match="class 'a' \\(id 0\\) is in both the train and the test split"):
        FewShotClassification.from_folder(root, size=2, splits={"train": ["a", "b"], "test": ["a"]}, n_way=2)
    with pytest.raises(ValueError, match="splits name an unknown class 'z'"):
        FewShotClassification.from_folder(root, size=2, splits={"train": ["a", "z"]}, n_way=2)


def test_from_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        FewShotClassification.from_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty has no class subfolders"):
        FewShotClassification.from_folder(tmp_path / "empty")
    root = write_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "hollow").mkdir()
    (root / "hollow" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="class folder .*hollow holds no images"):
        FewShotClassification.from_folder(root, size=2)
    (root / "hollow" / "readme.txt").unlink()
    (root / "hollow").rmdir()
    with pytest.raises(ValueError, match="00.png is 8x6 pixels, smaller than crop=7"):
        FewShotClassification.from_folder(root, size=2, crop=7)
    with pytest.raises(ValueError, match="unknown mode 'CMYK'"):
        FewShotClassification.from_folder(root, size=2, mode="CMYK")


def test_from_folder_cache_is_reused_and_rebuilt_when_stale(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "d", {"a": 2, "b": 3})
    cache = tmp_path / "cache" / "d.pt"
    decoded = []
    decode = fewshot._decode
    monkeypatch.setattr(fewshot, "_decode", lambda f, *a: decoded.append(f.name) or decode(f, *a))
    monkeypatch.setattr(fewshot, "PROGRESS_MIN_FILES", 1)  # the progress bar path runs too
    first = FewShotClassification.from_folder(root, size=4, n_way=2, cache=cache)
    assert cache.exists() and len(decoded) == 5
    assert not [p for p in cache.parent.iterdir() if p != cache]  # no temporary file left behind
    again = FewShotClassification.from_folder(root, size=4, n_way=2, cache=cache)
    assert len(decoded) == 5 and torch.equal(again.images, first.images) and again.class_names == ("a", "b")
    FewShotClassification.from_folder(root, size=3, n_way=2, cache=cache)  # other settings: rebuilt
    assert len(decoded) == 10
    gray(np.full((6, 8), 7)).save(root / "b" / "01.png")  # same size, new content
    changed = FewShotClassification.from_folder(root, size=4, n_way=2, cache=cache)
    assert len(decoded) == 15 and (changed.images[3] == 7).all() and torch.equal(changed.images[:3], first.images[:3])
    cache.write_bytes(b"damaged")
    assert torch.equal(FewShotClassification.from_folder(root, size=4, n_way=2, cache=cache).images, changed.images)
    assert len(decoded) == 20


# Omniglot shares the sampler -------------------------------------------------------------------


def old_omniglot_sample(bank: torch.Tensor, n: int, k: int, q: int, b: int, generator: torch.Generator):
    """Omniglot's sampler before it delegated to FewShotClassification (`bank: [C, 20, 28, 28]` uint8)."""
    classes, drawers = bank.shape[:2]
    flat = bank.reshape(-1, 1, *bank.shape[-2:]).float().div_(255)
    picked = distinct_indices((b,), n, classes, generator)
    shots = distinct_indices((b, n), k + q, drawers, generator)
    rows = (picked.unsqueeze(-1) * drawers + shots).flatten()
    images = flat.index_select(0, rows).view(b, n, k + q, 1, *bank.shape[-2:])
    return images[:, :, :k].reshape(b, n * k, 1, 28, 28), images[:, :, k:].reshape(b, n * q, 1, 28, 28), picked


@pytest.fixture(scope="module")
def characters(tmp_path_factory):
    if not (SHARED / "images_background_small1.zip").exists():
        pytest.skip(f"Omniglot files not found in {SHARED} (set MAMLBOOK_DATA)")
    from mamlbook.data import load_characters

    mp = pytest.MonkeyPatch()
    mp.setenv("MAMLBOOK_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("MAMLBOOK_DATA", str(SHARED.parent))
    yield load_characters()
    mp.undo()


@pytest.mark.parametrize(("split", "n", "k", "q"), [("train", 5, 1, 1), ("val", 20, 1, 5), ("test", 5, 5, 15)])
def test_omniglot_draws_what_it_drew_before(characters, split, n, k, q):
    """The equal-count path consumes the generator exactly as Omniglot's own sampler did, so cached
    study results stay valid: Omniglot, the general constructor over its bank and the old code agree."""
    omniglot = Omniglot(k, q, n, split, characters=characters)
    bank = omniglot.bank  # [C, 20, 28, 28] uint8
    labels = torch.arange(bank.shape[0]).repeat_interleave(bank.shape[1])
    general = FewShotClassification(bank.reshape(-1, 1, 28, 28), labels, n_way=n, k_shot=k, k_query=q)
    gens = [torch.Generator().manual_seed(11) for _ in range(3)]
    for b in (8, 3):  # twice, so the generator's state after a batch matters too
        old_support, old_query, old_classes = old_omniglot_sample(bank, n, k, q, b, gens[0])
        for tasks, g in ((omniglot, gens[1]), (general, gens[2])):
            batch = tasks.sample(b, g)
            assert torch.equal(batch.support_x, old_support) and torch.equal(batch.query_x, old_query)
            assert torch.equal(batch.info["classes"], old_classes)
            assert batch.support_y.tolist() == [torch.arange(n).repeat_interleave(k).tolist()] * b
