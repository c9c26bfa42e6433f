"""N-way K-shot classification tasks on Omniglot characters, sampled by tensor indexing.

Splits are by alphabet, so meta-test characters come from alphabets never seen in meta-training.
The minimal setting (the two small background zips, 8 distinct alphabets, the copy the book
uses) uses:

- train: Balinese, Early_Aramaic, Greek, Korean, Latin, Tagalog (153 characters, x4 rotations)
- val:   Sanskrit (42 characters)
- test:  Japanese_(katakana) (47 characters)

The full setting uses the 30 background alphabets for train and val (every sixth alphabet, in
sorted order, starting with the sixth, goes to val: 5 alphabets) and the 20 evaluation alphabets for test.
"""

from __future__ import annotations

import os
import time

import torch

from ..data.omniglot import FULL, MINIMAL, CharacterSet, load_characters
from .batch import TaskBatch
from .distribution import TaskDistribution, check_count
from .fewshot import FewShotClassification, distinct_indices

__all__ = [
    "MINIMAL_SPLITS",
    "SETTINGS",
    "SPLITS",
    "Omniglot",
    "distinct_indices",  # moved to .fewshot; still imported from here
    "sampling_throughput",
    "split_alphabets",
]

SPLITS = ("train", "val", "test")
MINIMAL_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin", "Tagalog"),
    "val": ("Sanskrit",),
    "test": ("Japanese_(katakana)",),
}
SETTINGS = ("minimal", "full")


def split_alphabets(characters: CharacterSet, setting: str, split: str) -> tuple[str, ...]:
    """The alphabets of `split` in `setting` ("minimal" or "full"); see the module docstring."""
    if setting == "minimal":
        return MINIMAL_SPLITS[split]
    names = characters.alphabet_names()
    if split == "test":  # `characters` holds the evaluation set: all of it is meta-test
        return tuple(names)
    val = tuple(names[5::6])
    return tuple(a for a in names if a not in val) if split == "train" else val


class Omniglot(TaskDistribution):
    """N-way K-shot tasks: N characters of one split, K support and `k_query` query drawings of each.

    Labels are 0..N-1 in the order the characters were drawn. In the train split each character
    also appears rotated by 90, 180 and 270 degrees as three new classes (Santoro et al. 2016,
    Finn et al. 2017); val and test use upright characters only. Sampling is the general
    `FewShotClassification`'s, over `bank` (every class has 20 drawings: its equal-count path).
    Shapes: `support_x: [B, N*K, 1, 28, 28]` float32 in [0, 1] (ink = 1), `support_y: [B, N*K]` int64,
    and likewise `[B, N*Q, ...]` for the query set, grouped by class.
    """

    loss = "ce"

    def __init__(
        self,
        k_shot: int = 1,
        k_query: int | None = None,
        n_way: int = 5,
        split: str = "train",
        setting: str = "minimal",
        rotations: bool = True,
        root: str | os.PathLike | None = None,
        characters: CharacterSet | None = None,
    ) -> None:
        self.k_shot = check_count("k_shot (K)", k_shot)
        self.k_query = check_count("k_query", k_shot if k_query is None else k_query)
        self.n_way = check_count("n_way (N)", n_way, minimum=2)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}; known settings: {', '.join(SETTINGS)}")
        self.split, self.setting, self.rotations, self.root = split, setting, rotations, root
        if characters is None:
            if setting == "minimal":
                characters = load_characters(MINIMAL, root)
            else:
                files = FULL[1:] if split == "test" else FULL[:1]
                characters = load_characters(files, root)
        self._all = characters
        self.characters = characters.select(split_alphabets(characters, setting, split))
        images = self.characters.images  # [C, 20, 28, 28] uint8
        if split == "train" and rotations:
            images = torch.cat([torch.rot90(images, r, dims=(-2, -1)) for r in range(4)])
        self.bank = images
        classes, drawers = images.shape[:2]
        if self.n_way > classes:
            raise ValueError(
                f"n_way={self.n_way} asks for more classes than the {split} split has: {classes} "
                f"({setting} setting, alphabets {', '.join(self.characters.alphabet_names())})"
            )
        if self.k_shot + self.k_query > drawers:
            raise ValueError(
                f"k_shot + k_query = {self.k_shot} + {self.k_query} = {self.k_shot + self.k_query} asks for more "
                f"drawings than a character has: {drawers}"
            )
        self.sampler = FewShotClassification.from_bank(
            images.unsqueeze(2), self.n_way, self.k_shot, self.k_query, split
        )

    @property
    def num_classes(self) -> int:
        return self.bank.shape[0]

    def for_split(self, split: str) -> Omniglot:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
        if split == self.split:
            return self
        if self.setting == "full" and "test" in (split, self.split):
            characters = None  # the test split lives in another zip
        else:
            characters = self._all
        return Omniglot(
            self.k_shot, self.k_query, self.n_way, split, self.setting, self.rotations, self.root, characters
        )

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TaskBatch:
        """`batch_size` tasks at once: random character subsets and drawer subsets, then one gather.

        `info["classes"]: [B, N]` are rows of `bank`.
        """
        return self.sampler.sample(batch_size, generator)


def sampling_throughput(
    n_way: int = 5, k_shot: int = 1, k_query: int = 1, batch_size: int = 1000, seconds: float = 2.0
) -> float:
    """Tasks sampled per second from the train split (the benchmark behind `mamlbook data bench`)."""
    tasks = Omniglot(k_shot, k_query, n_way, "train")
    generator = torch.Generator().manual_seed(0)
    tasks.sample(batch_size, generator)  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        tasks.sample(batch_size, generator)
        count += batch_size
    return count / (time.perf_counter() - started)
