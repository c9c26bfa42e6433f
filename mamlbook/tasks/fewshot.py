"""N-way K-shot classification tasks over any labelled tensor of images (or vectors).

One sampler serves Omniglot and a user's own data: the examples live in one float tensor, each
split names its classes, and a meta-batch is drawn with a handful of tensor operations and a single
gather, whatever the batch size. Classes may hold different numbers of examples; each task draws
its K + Q examples of a class uniformly from that class's own examples, without replacement.

An image folder in the torchvision ImageFolder layout (root/class_name/*.png) is read by
`FewShotClassification.from_folder`, decoded once and optionally cached as uint8 tensors.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.remote import save_tensors
from .batch import TaskBatch
from .distribution import TaskDistribution, check_count

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MODES = {"RGB": 3, "L": 1}
PROGRESS_MIN_FILES = 300  # below this, decoding is quick enough that a progress bar is noise
FOLDER_CACHE_VERSION = 1  # bump when decoding changes, so old caches are rebuilt


def distinct_indices(shape: tuple[int, ...], m: int, high: int, generator: torch.Generator | None) -> Tensor:
    """`[*shape, m]` int64: in each row, m distinct values drawn uniformly from 0..high-1.

    Small m: draw with replacement and redraw the rows that repeat a value (few do), which avoids
    sorting `high` random keys per row; large m: the top m of `high` uniform keys.
    """
    no_repeat = 1.0
    for i in range(m):
        no_repeat *= 1 - i / high
    if no_repeat < 0.5:
        return torch.rand(*shape, high, generator=generator).topk(m, dim=-1).indices
    out = torch.randint(high, (*shape, m), generator=generator).view(-1, m)
    while True:
        ordered = out.sort(dim=1).values
        repeats = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1)
        count = int(repeats.sum())
        if count == 0:
            return out.view(*shape, m)
        out[repeats] = torch.randint(high, (count, m), generator=generator)


def distinct_below(counts: Tensor, m: int, generator: torch.Generator | None) -> Tensor:
    """`[*counts.shape, m]` int64: in each row, m distinct values drawn uniformly from 0..counts[row]-1.

    `distinct_indices` with a bound per row (every count >= m), for classes of different sizes.
    Rows with a count below m*m, where a draw with replacement would repeat too often, take the
    top m of `count` uniform keys, padded to the largest such count with -inf keys that topk never
    picks; the other rows draw with replacement and redraw the rows that repeat a value. Either way
    each row is a uniformly random ordered subset, so its first K and last Q are a uniform split.
    """
    flat = counts.reshape(-1)
    out = torch.empty(flat.numel(), m, dtype=torch.long)
    small = flat < m * m  # here P(no repeat) ~ exp(-1/2) at worst, like distinct_indices' threshold
    for rows, draw in ((small, _top_keys), (~small, _redraw_repeats)):
        if bool(rows.all()):
            return draw(flat.unsqueeze(1), m, generator).view(*counts.shape, m)
        rows = rows.nonzero().squeeze(1)
        if rows.numel():
            out.index_copy_(0, rows, draw(flat.index_select(0, rows).unsqueeze(1), m, generator))
    return out.view(*counts.shape, m)


def _top_keys(bound: Tensor, m: int, generator: torch.Generator | None) -> Tensor:
    """`[R, m]`: the top m of `bound[r]` uniform keys per row (`bound: [R, 1]`), padded with -inf."""
    width = int(bound.max())
    keys = torch.rand(bound.shape[0], width, generator=generator)
    keys.masked_fill_(torch.arange(width) >= bound, float("-inf"))
    return keys.topk(m, dim=1).indices


def _redraw_repeats(bound: Tensor, m: int, generator: torch.Generator | None) -> Tensor:
    """`[R, m]`: uniform draws below `bound[r]` with replacement, rows that repeat a value drawn again."""
    picks = _uniform_below(bound, m, generator)
    while True:
        ordered = picks.sort(dim=1).values
        repeats = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1).nonzero().squeeze(1)
        if repeats.numel() == 0:
            return picks
        picks.index_copy_(0, repeats, _uniform_below(bound.index_select(0, repeats), m, generator))


def _uniform_below(bound: Tensor, m: int, generator: torch.Generator | None) -> Tensor:
    """`[R, m]` int64 uniform in 0..bound[r]-1 (`bound: [R, 1]`); float64 keeps the rounding bias ~2^-53."""
    u = torch.rand(bound.shape[0], m, generator=generator, dtype=torch.float64)
    return (u * bound).long().minimum(bound - 1)


@dataclass(frozen=True)
class _Examples:
    """What every split of one data set shares: built once, never copied by `for_split`.

    `source` is the images tensor as given (uint8 stays uint8); `images: [M, *x_shape]` its float
    version, gathered from; `order: [M]` the example indices sorted by class (stable);
    `ids: [U]` the sorted distinct class ids; `starts`, `counts: [U]` where each class's run of
    `order` begins and how long it is.
    """

    source: Tensor
    images: Tensor
    labels: Tensor
    order: Tensor
    ids: Tensor
    starts: Tensor
    counts: Tensor
    class_names: tuple[str, ...] | None
    splits: dict[str, Tensor]  # split -> class ids [C_split], in the order given


class FewShotClassification(TaskDistribution):
    """N-way K-shot tasks: N classes of one split, K support and `k_query` query examples of each.

    Built from `images: [M, C, H, W]` (or `[M, F]`; uint8 is scaled to float32 in [0, 1], float
    is kept as it is) and integer `labels: [M]`. `splits` maps "train", "val" and "test" to their
    class ids (or names, given `class_names`); by default every class is "train". Labels within a
    task are 0..N-1 in the order the classes were drawn; `info["classes"]: [B, N]` holds their ids.
    Shapes: `support_x: [B, N*K, *x_shape]`, `support_y: [B, N*K]` int64, and likewise `[B, N*Q, ...]`
    for the query set, grouped by class.
    """

    loss = "ce"

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | Sequence[int],
        n_way: int = 5,
        k_shot: int = 1,
        k_query: int | None = None,
        split: str = "train",
        splits: Mapping[str, Sequence[int | str]] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self._setup(_examples(images, labels, splits, class_names), n_way, k_shot, k_query, split)

    def _setup(self, examples: _Examples, n_way: int, k_shot: int, k_query: int | None, split: str) -> None:
        self.k_shot = check_count("k_shot (K)", k_shot)
        self.k_query = check_count("k_query", k_shot if k_query is None else k_query)
        self.n_way = check_count("n_way (N)", n_way, minimum=2)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
        if split not in examples.splits:
            given = ", ".join(examples.splits)
            raise ValueError(f"there is no {split} split: splits were given for {given} only (pass splits=...)")
        self.split, self._examples = split, examples
        self.classes = examples.splits[split]  # [C_split] class ids
        if len(self.classes) == 0:
            raise ValueError(f"the {split} split is empty: it names no classes")
        where = torch.searchsorted(examples.ids, self.classes).clamp_max(len(examples.ids) - 1)
        known = examples.ids[where] == self.classes
        self._starts = examples.starts[where]
        self._counts = torch.where(known, examples.counts[where], 0)  # [C_split]
        if self.n_way > len(self.classes):
            raise ValueError(
                f"n_way={self.n_way} asks for more classes than the {split} split has: {len(self.classes)}"
            )
        need, smallest = self.k_shot + self.k_query, int(self._counts.argmin())
        if need > self._counts[smallest]:
            label, count = self.class_label(int(self.classes[smallest])), int(self._counts[smallest])
            raise ValueError(
                f"k_shot + k_query = {self.k_shot} + {self.k_query} = {need} asks for more examples than "
                f"{label} of the {split} split has: {count}"
            )
        self._equal = bool((self._counts == self._counts[0]).all())

    @classmethod
    def from_bank(
        cls, bank: Tensor, n_way: int = 5, k_shot: int = 1, k_query: int | None = None, split: str = "train"
    ) -> FewShotClassification:
        """Tasks over an equal-count bank `[classes, per_class, *x_shape]`: class c is row c.

        This is how Omniglot samples (its bank is [characters, 20 drawers, 1, 28, 28]); it takes
        the fast path of drawing positions below one shared count.
        """
        classes, per_class = bank.shape[:2]
        labels = torch.arange(classes).repeat_interleave(per_class)
        return cls(
            bank.reshape(classes * per_class, *bank.shape[2:]),
            labels,
            n_way,
            k_shot,
            k_query,
            split,
            {split: range(classes)},
        )

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        size: int = 84,
        crop: int | None = None,
        mode: str = "RGB",
        splits: Mapping[str, Sequence[int | str]] | None = None,
        split: str = "train",
        n_way: int = 5,
        k_shot: int = 1,
        k_query: int | None = None,
        cache: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> FewShotClassification:
        """Tasks over an image folder with one subfolder per class (root/class_name/*.png|jpg|jpeg|bmp).

        Class ids are the sorted class names' positions; `splits` may name classes by name. Each
        image is centre-cropped to `crop` x `crop` pixels (if given), resized to `size` x `size`
        and converted to `mode` ("RGB": 3 channels, "L": grayscale); they are kept as uint8
        `[M, C, size, size]` in `self.images` and scaled to [0, 1] when sampled. `cache` names a
        file the decoded tensors are saved to, keyed by a hash of every file and these settings,
        so a changed folder is decoded afresh instead of being served stale.
        """
        images, labels, names = load_folder(path, size, crop, mode, cache, progress)
        return cls(images, labels, n_way, k_shot, k_query, split, splits, names)

    @property
    def images(self) -> Tensor:
        """All examples of every split, as given: `[M, *x_shape]` (uint8 images stay uint8)."""
        return self._examples.source

    @property
    def labels(self) -> Tensor:
        """`[M]` int64 class ids of `images`."""
        return self._examples.labels

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self._examples.class_names

    @property
    def num_classes(self) -> int:
        """Classes in this split."""
        return len(self.classes)

    def class_label(self, class_id: int) -> str:
        """How errors name a class: "class 'dog' (id 3)", or "class 3" without class names."""
        return _class_label(class_id, self._examples.class_names)

    def for_split(self, split: str) -> FewShotClassification:
        """The same N, K and Q over `split`'s classes, sharing this object's tensors."""
        if split == self.split:
            return self
        other = object.__new__(FewShotClassification)
        other._setup(self._examples, self.n_way, self.k_shot, self.k_query, split)
        return other

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TaskBatch:
        """`batch_size` tasks at once: random class subsets, random example subsets, then one gather."""
        b = self._check_batch(batch_size)
        n, k, q = self.n_way, self.k_shot, self.k_query
        picked = distinct_indices((b,), n, len(self.classes), generator)  # [B, N] positions in the split
        if self._equal:
            shots = distinct_indices((b, n), k + q, int(self._counts[0]), generator)  # [B, N, K+Q]
        else:
            shots = distinct_below(_take(self._counts, picked), k + q, generator)
        rows = _take(self._examples.order, _take(self._starts, picked).unsqueeze(-1) + shots).flatten()
        data = self._examples.images
        images = data.index_select(0, rows.to(data.device)).view(b, n, k + q, *data.shape[1:])
        labels = torch.arange(n).view(1, n, 1)
        support_x = images[:, :, :k].reshape(b, n * k, *data.shape[1:])
        query_x = images[:, :, k:].reshape(b, n * q, *data.shape[1:])
        support_y = labels.expand(b, n, k).reshape(b, n * k)
        query_y = labels.expand(b, n, q).reshape(b, n * q)
        return TaskBatch(support_x, support_y, query_x, query_y, {"classes": _take(self.classes, picked)})


def _take(values: Tensor, index: Tensor) -> Tensor:
    """`values[index]` for 1-D `values`: index_select costs microseconds where advanced indexing
    can cost milliseconds on a busy CPU."""
    return values.index_select(0, index.flatten()).view(index.shape)


def _examples(
    images: Tensor,
    labels: Tensor | Sequence[int],
    splits: Mapping[str, Sequence[int | str]] | None,
    class_names: Sequence[str] | None,
) -> _Examples:
    """Check and index the data once: float images, examples sorted by class, split class ids."""
    if not isinstance(images, Tensor) or images.dim() < 2:
        raise ValueError(f"images must be a tensor [M, C, H, W] or [M, F], got {_describe(images)}")
    source = images
    if images.dtype == torch.uint8:  # converted once: converting after each gather costs more
        images = images.float().div_(255)
    elif not images.is_floating_point():
        raise ValueError(f"images must be uint8 (scaled to [0, 1]) or floating point, got {images.dtype}")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor [M], got {labels.dtype} of shape {tuple(labels.shape)}")
    labels = labels.long().cpu()
    if len(labels) != len(images):
        raise ValueError(f"labels and images disagree on the number of examples: {len(labels)} != {len(images)}")
    if len(labels) == 0:
        raise ValueError("there are no examples: images and labels are empty")
    names = tuple(class_names) if class_names is not None else None
    if names is not None and len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < len(names)):
        raise ValueError(f"labels must be class ids 0..{len(names) - 1} to match class_names")
    ids, counts = torch.unique(labels, sorted=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(labels, stable=True)
    if splits is None:
        splits = {"train": ids.tolist()}
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split {unknown[0]!r} in splits; known splits: {', '.join(SPLITS)}")
    resolved = {
        s: torch.tensor([_class_id(c, names) for c in splits[s]], dtype=torch.long) for s in SPLITS if s in splits
    }
    owner: dict[int, str] = {}
    for s, classes in resolved.items():
        for c in classes.tolist():
            if c in owner and owner[c] != s:
                label = _class_label(c, names)
                raise ValueError(f"{label} is in both the {owner[c]} and the {s} split; splits must be disjoint")
            if c in owner:
                raise ValueError(f"class {c} is listed twice in the {s} split")
            owner[c] = s
    return _Examples(source, images, labels, order, ids, starts, counts, names, resolved)


def _class_label(class_id: int, names: tuple[str, ...] | None) -> str:
    if names is not None and 0 <= class_id < len(names):
        return f"class {names[class_id]!r} (id {class_id})"
    return f"class {class_id}"


def _class_id(c: int | str, names: tuple[str, ...] | None) -> int:
    if isinstance(c, str):
        if names is None:
            raise ValueError(f"splits name class {c!r}, but there are no class_names to look it up in")
        try:
            return names.index(c)
        except ValueError:
            raise ValueError(f"splits name an unknown class {c!r}") from None
    if isinstance(c, Tensor) and c.dim() == 0 and not c.is_floating_point():
        return int(c)
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
        raise ValueError(f"splits must list class ids (int) or names (str), got {c!r}")
    return int(c)


def _describe(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def folder_files(path: str | os.PathLike) -> tuple[list[str], list[list[Path]]]:
    """The sorted class names under `path` and each class's image files, sorted (hidden ones skipped)."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a folder")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ValueError(f"image folder {root} has no class subfolders (expected {root}/<class name>/<image>.png)")
    files = []
    for name in names:
        found = sorted(
            p
            for p in (root / name).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
        if not found:
            raise ValueError(
                f"class folder {root / name} holds no images ({', '.join(IMAGE_SUFFIXES)}); remove it or add some"
            )
        files.append(found)
    return names, files


def load_folder(
    path: str | os.PathLike,
    size: int = 84,
    crop: int | None = None,
    mode: str = "RGB",
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[Tensor, Tensor, list[str]]:
    """Decode an ImageFolder-layout folder: `images: [M, C, size, size]` uint8, `labels: [M]`, class names.

    With `cache`, the result is saved there (atomically) under a sha256 of the settings, the file
    list and every file's bytes, and read back while that key still matches.
    """
    check_count("size", size)
    if crop is not None:
        check_count("crop", crop)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known modes: {', '.join(MODES)} (RGB: 3 channels, L: grayscale)")
    names, files = folder_files(path)
    flat = [f for group in files for f in group]
    show = progress and len(flat) > PROGRESS_MIN_FILES
    key = None
    if cache is not None:
        key = _folder_key(Path(path), flat, size, crop, mode, show)
        payload = _load_cache(Path(cache), key)
        if payload is not None:
            return payload["images"], payload["labels"], list(payload["class_names"])
    images = torch.from_numpy(np.stack([_decode(f, size, crop, mode) for f in _bar(flat, show, "decode images")]))
    images = images.view(len(flat), size, size, -1).permute(0, 3, 1, 2).contiguous()  # [M, C, size, size]
    labels = torch.arange(len(files)).repeat_interleave(torch.tensor([len(group) for group in files]))
    if cache is not None:
        payload = {
            "version": FOLDER_CACHE_VERSION,
            "key": key,
            "images": images,
            "labels": labels,
            "class_names": names,
        }
        save_tensors(payload, Path(cache))
    return images, labels, names


def _decode(file: Path, size: int, crop: int | None, mode: str) -> np.ndarray:
    """One image file to uint8 `[size, size]` or `[size, size, 3]`: centre crop, resize, convert."""
    from PIL import Image

    with Image.open(file) as image:
        image = image.convert(mode)
        if crop is not None:
            width, height = image.size
            if crop > min(width, height):
                raise ValueError(f"{file} is {width}x{height} pixels, smaller than crop={crop}")
            left, top = (width - crop) // 2, (height - crop) // 2
            image = image.crop((left, top, left + crop, top + crop))
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def _folder_key(root: Path, files: list[Path], size: int, crop: int | None, mode: str, show: bool) -> str:
    digest = hashlib.sha256(f"v{FOLDER_CACHE_VERSION} size={size} crop={crop} mode={mode}\n".encode())
    for file in _bar(files, show, "hash images"):
        data = file.read_bytes()
        digest.update(f"{file.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _load_cache(path: Path, key: str) -> dict | None:
    """The cached payload if it exists, loads and carries `key`; anything else means rebuild."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
    if not isinstance(payload, dict) or payload.get("version") != FOLDER_CACHE_VERSION or payload.get("key") != key:
        return None
    return payload


def _bar(items: list, show: bool, desc: str):
    if not show:
        return items
    from ..progress import tqdm

    return tqdm(items, desc=desc, unit="file", leave=False)
