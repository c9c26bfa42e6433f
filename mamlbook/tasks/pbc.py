"""Few-shot blood-cell classification on PBC: N-way K-shot tasks over cell types held out by split.

The data layer (`mamlbook.data.pbc`) finds and verifies the JPEGs; here they are decoded once as
BloodMNIST does (Yang et al. 2023): a 200x200 centre crop of the 360x363 image, which keeps the
whole white cell (they are 100 to 180 pixels across) and drops most of the red cells around it,
then a resize to 28x28, which keeps colour and the nucleus's shape, loses fine granules, and lets
Conv4 meta-train on one CPU core in minutes (its input is Omniglot's size, so a model
meta-trained on Omniglot reads it unchanged). The uint8 result is cached under `cache_root()`,
keyed by the checksums of exactly the files used, so a changed copy is decoded afresh.

With 8 classes there are no classes to spare, so each split meta-trains on 5 cell types and
meta-tests on the other 3 (3-way tasks of types never seen in meta-training):

- split 1, "cells of disease": meta-test on erythroblast, ig (immature granulocytes) and monocyte.
  The first two are rare or absent in a healthy adult's blood, and each has a look-alike among the
  meta-training types (ig: neutrophil, its mature form; erythroblast: lymphocyte, a round dark
  nucleus), while ig and monocyte (large cells, irregular nucleus, grey-blue cytoplasm) are easy to
  mix up with each other. New, hard cell types next to familiar ones: the clinical case few-shot
  learning is for.
- split 2, "the confusable pairs learned": meta-train on all the confusable types (erythroblast,
  ig, lymphocyte, monocyte, neutrophil) and meta-test on basophil, eosinophil and platelet, which
  differ from each other at a glance (dark granules, orange granules, a small anucleate fragment).

Validation cannot hold out classes, so it holds out images: every fifth file of each
meta-training class (sorted by name) forms the "val" split, the same 5 cell types with images
meta-training never sees. It measures fitting to images, not transfer to new types, and is for
monitoring only: no model is selected on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import cache_root
from ..data.pbc import CLASSES, PBCFiles, pbc_files
from ..data.remote import save_tensors
from .batch import TaskBatch
from .distribution import TaskDistribution, check_count
from .fewshot import FOLDER_CACHE_VERSION, MODES, FewShotClassification, _bar, _decode, _load_cache

CROP, IMAGE_SIZE = 200, 28  # BloodMNIST's centre crop and size; see the module docstring
SPLITS: dict[int, dict[str, tuple[str, ...]]] = {
    1: {"train": ("basophil", "eosinophil", "lymphocyte", "neutrophil", "platelet"),
        "test": ("erythroblast", "ig", "monocyte")},
    2: {"train": ("erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil"),
        "test": ("basophil", "eosinophil", "platelet")},
}  # fmt: skip
SPLIT_NAMES = {1: "cells of disease held out", 2: "confusable pairs learned"}
VAL_EVERY = 5  # every fifth image of a meta-training class is held out for validation
HELD_OUT = " (held out)"
# ITU-R 601-2 luma, the weights of PIL's convert("L"): how the cross-domain test sees the cells in grey.
LUMA = (0.299, 0.587, 0.114)


_loaded: dict[tuple[str, Path], PBCImages] = {}


@dataclass(frozen=True)
class PBCImages:
    """Decoded PBC: `images: [M, C, size, size]` uint8, `labels: [M]` int64 indices into `CLASSES`,
    `names[i]` the file `<class>/<file>` of image i, and the verified files it came from."""

    images: Tensor
    labels: Tensor
    names: tuple[str, ...]
    files: PBCFiles


def cache_path(files: PBCFiles, size: int, crop: int, mode: str) -> Path:
    return cache_root() / "pbc" / f"{files.variant}-{files.key[:16]}-crop{crop}-{size}px-{mode}.pt"


def load_pbc(
    root: str | os.PathLike | None = None,
    size: int = IMAGE_SIZE,
    crop: int = CROP,
    mode: str = "RGB",
    progress: bool = False,
) -> PBCImages:
    """Every verified PBC image, centre-cropped to `crop`, resized to `size` and converted to `mode`.

    Decoded once (2,000 JPEGs: about ten seconds) and then read from the cache.
    """
    check_count("size", size)
    check_count("crop", crop)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known modes: {', '.join(MODES)}")
    files = pbc_files(root)
    names = tuple(f"{label}/{path.name}" for label, path in zip(files.labels, files.paths, strict=True))
    key = f"{files.key} crop={crop} size={size} mode={mode}"
    path = cache_path(files, size, crop, mode)
    if (key, path) in _loaded:  # a study builds the same tasks dozens of times: read the file once
        return _loaded[key, path]
    payload = _load_cache(path, key)
    if payload is None or tuple(payload["names"]) != names:
        decoded = [_decode(p, size, crop, mode) for p in _bar(list(files.paths), progress, "decode PBC")]
        images = torch.from_numpy(np.stack(decoded)).view(len(decoded), size, size, -1).permute(0, 3, 1, 2)
        labels = torch.tensor([CLASSES.index(label) for label in files.labels])
        payload = {"version": FOLDER_CACHE_VERSION, "key": key, "images": images.contiguous(), "labels": labels}
        payload["names"] = list(names)
        save_tensors(payload, path)
    _loaded[key, path] = PBCImages(payload["images"], payload["labels"], names, files)
    return _loaded[key, path]


def grayscale(x: Tensor) -> Tensor:
    """RGB images `[..., 3, H, W]` as one grey channel `[..., 1, H, W]` (PIL's "L" weights)."""
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * weights).sum(dim=-3, keepdim=True)


def split_classes(split_id: int) -> dict[str, tuple[str, ...]]:
    """The cell types of each split of `split_id` (1 or 2); "val" holds the "train" types' held-out images."""
    if split_id not in SPLITS:
        raise ValueError(f"unknown split_id {split_id!r}; PBC has splits {', '.join(map(str, SPLITS))}")
    classes = SPLITS[split_id]
    return {"train": classes["train"], "val": tuple(c + HELD_OUT for c in classes["train"]), "test": classes["test"]}


def _relabel(data: PBCImages, split_id: int) -> tuple[Tensor, tuple[str, ...]]:
    """Labels with the held-out images of meta-training types as classes of their own ("basophil (held out)").

    Ids 0..7 are `CLASSES`, 8..15 the same types' held-out images; `val` uses the latter.
    """
    train = {CLASSES.index(c) for c in SPLITS[split_id]["train"]}
    labels = data.labels.clone()
    for c in train:
        members = (data.labels == c).nonzero().squeeze(1)  # in file-name order
        held_out = members[VAL_EVERY - 1 :: VAL_EVERY]
        labels[held_out] = c + len(CLASSES)
    return labels, CLASSES + tuple(c + HELD_OUT for c in CLASSES)


class PBC(TaskDistribution):
    """N-way K-shot tasks of blood cell types: N types of one split, K support and `k_query` query images each.

    `split_id` (1 or 2) picks the partition of the 8 cell types (module docstring); `split` is
    "train" (5 types, 4 of every 5 images), "val" (the same types' other images) or "test" (the 3
    held-out types, all images). Sampling is `FewShotClassification`'s, over the uint8 images.
    Shapes: `support_x: [B, N*K, 3, 28, 28]` float32 in [0, 1] (one channel with `mode="L"`),
    `support_y: [B, N*K]` int64 in 0..N-1, and likewise `[B, N*Q, ...]` for the query set.
    `info["classes"]: [B, N]` are ids into `class_names` (ids 8 and up: held-out images).
    """

    loss = "ce"

    def __init__(
        self,
        k_shot: int = 1,
        k_query: int | None = None,
        n_way: int = 3,
        split: str = "train",
        split_id: int = 1,
        root: str | os.PathLike | None = None,
        mode: str = "RGB",
        size: int = IMAGE_SIZE,
        crop: int = CROP,
        variant: str | None = None,
        data: PBCImages | None = None,
    ) -> None:
        """`variant` ("subset" or "full"), when given, is checked against the copy found, so a
        configuration that names one is never silently run on the other."""
        self.k_shot = check_count("k_shot (K)", k_shot)
        self.k_query = check_count("k_query", k_shot if k_query is None else k_query)
        self.n_way = check_count("n_way (N)", n_way, minimum=2)
        self.split_id, self.split, self.root, self.mode = split_id, split, root, mode
        splits = split_classes(split_id)
        if data is None:
            data = load_pbc(root, size, crop, mode)
        if variant is not None and variant != data.files.variant:
            raise ValueError(f"this configuration asks for the {variant} copy of PBC; {data.files.folder} holds the "
                             f"{data.files.variant} copy")  # fmt: skip
        self.data, self.variant = data, data.files.variant
        labels, names = _relabel(data, split_id)
        self.sampler = FewShotClassification(
            data.images, labels, self.n_way, self.k_shot, self.k_query, split, splits, names
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        """The cell types of this split, in the order of `sampler.classes`."""
        return tuple(self.sampler.class_names[int(c)] for c in self.sampler.classes)

    @property
    def num_classes(self) -> int:
        return self.sampler.num_classes

    def for_split(self, split: str) -> PBC:
        """The same N, K and Q over `split`'s cell types, sharing the decoded images."""
        if split == self.split:
            return self
        other = object.__new__(PBC)
        other.__dict__.update(self.__dict__)
        other.split, other.sampler = split, self.sampler.for_split(split)
        return other

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TaskBatch:
        """`batch_size` tasks at once (one gather); the same generator state gives the same tasks."""
        return self.sampler.sample(batch_size, generator)
