"""Omniglot (Lake, Salakhutdinov and Tenenbaum, 2015): its published files, and images as tensors.

Image sets are read straight from their verified zips, preprocessed once (105x105 binary PNGs to
28x28 antialiased grey levels, ink = 1) and kept as a uint8 tensor cache named after the zips'
checksums, so a changed source can never be served from a stale cache.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import cache_root, data_root
from .remote import DataMissingError, RemoteFile, download, file_checksum, save_tensors, verify

BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
IMAGE_SIZE = 28
SOURCE_SIZE = 105
DRAWERS = 20
CACHE_VERSION = 1  # bump when preprocessing changes, so old caches are not reused

# SHA256 of the files in ../shared/data/omniglot (its SHA256SUMS); MD5 of the full sets as published
# by torchvision (torchvision/datasets/omniglot.py), the only checksums the dataset's users agree on.
FILES: dict[str, RemoteFile] = {
    f.name: f
    for f in (
        RemoteFile(
            "images_background.zip", BASE_URL + "images_background.zip", "68d2efa1b9178cc56df9314c21c6e718", "md5"
        ),
        RemoteFile(
            "images_evaluation.zip", BASE_URL + "images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811", "md5"
        ),
        RemoteFile(
            "images_background_small1.zip",
            BASE_URL + "images_background_small1.zip",
            "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
        ),
        RemoteFile(
            "images_background_small2.zip",
            BASE_URL + "images_background_small2.zip",
            "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
        ),
        RemoteFile(
            "all_runs.zip",
            BASE_URL + "one-shot-classification/all_runs.zip",
            "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325",
        ),
    )
}
MINIMAL = ("images_background_small1.zip", "images_background_small2.zip")
FULL = ("images_background.zip", "images_evaluation.zip")

_verified: dict[tuple[str, int, int], str] = {}


def omniglot_folder(root: str | os.PathLike | None = None) -> Path:
    """The folder holding Omniglot's zips: `<data root>/omniglot`."""
    return data_root(root) / "omniglot"


def omniglot_file(
    name: str, root: str | os.PathLike | None = None, download_missing: bool = True, base_url: str | None = None
) -> Path:
    """The verified path of one Omniglot file, downloading it first when missing.

    Offline (or with `download_missing=False`) a missing file stops with an error that names the
    file, its URL and the folder to place it in.
    """
    try:
        remote = FILES[name]
    except KeyError:
        raise ValueError(f"unknown Omniglot file {name!r}; known files: {', '.join(FILES)}") from None
    folder = omniglot_folder(root)
    path = folder / name
    if not path.exists():
        if not download_missing:
            raise DataMissingError(
                f"{name} is not in {folder}. Download it from {remote.url} and place it in {folder}/ "
                f"(or run `mamlbook data fetch omniglot`)"
            )
        url = base_url.rstrip("/") + "/" + name if base_url else None
        try:
            return download(remote, folder, url)
        except PermissionError:
            raise DataMissingError(
                f"{name} is not in {folder}, which is not writable. Download it from {url or remote.url} and "
                f"place it there, or choose another data root (root= or $MAMLBOOK_DATA)"
            ) from None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:  # hashing ~3 MB takes milliseconds, but once per process is enough
        verify(path, remote)
        _verified[key] = remote.checksum
    return path


def read_ink(png: bytes) -> np.ndarray:
    """A 105x105 Omniglot PNG (black ink on white) as a bool array, True where there is ink."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return ~np.asarray(image.convert("1"), dtype=bool)


def downsample(ink: Tensor, size: int = IMAGE_SIZE) -> Tensor:
    """Binary images `[..., 105, 105]` to antialiased uint8 `[..., size, size]`, 255 = full ink.

    Bilinear with antialiasing averages each output pixel over its whole 3.75-pixel footprint, so
    thin strokes survive as grey instead of vanishing between samples.
    """
    lead = ink.shape[:-2]
    x = ink.reshape(-1, 1, *ink.shape[-2:]).float()
    small = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (small.clamp(0, 1) * 255).round().to(torch.uint8).reshape(*lead, size, size)


@dataclass(frozen=True)
class CharacterSet:
    """Every drawing of every character in some image zips.

    `images: [C, 20, 28, 28]` uint8 (ink = 255), one row per character with its 20 drawers;
    `alphabets[c]` and `characters[c]` name character c (e.g. "Greek", "character01").
    """

    images: Tensor
    alphabets: list[str]
    characters: list[str]

    def alphabet_names(self) -> list[str]:
        return sorted(set(self.alphabets))

    def select(self, alphabets: list[str] | tuple[str, ...]) -> CharacterSet:
        """The characters of the given alphabets, in the set's order."""
        unknown = sorted(set(alphabets) - set(self.alphabets))
        if unknown:
            raise ValueError(f"unknown alphabets {unknown}; this set has {self.alphabet_names()}")
        keep = [i for i, a in enumerate(self.alphabets) if a in set(alphabets)]
        return CharacterSet(self.images[keep], [self.alphabets[i] for i in keep], [self.characters[i] for i in keep])


def _read_zip(path: Path) -> dict[tuple[str, str], list[tuple[str, bytes]]]:
    """The PNG bytes of every drawing, grouped by (alphabet, character), in file-name order."""
    groups: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            parts = name.split("/")
            if not name.endswith(".png") or len(parts) != 4:
                continue
            _, alphabet, character, filename = parts
            groups.setdefault((alphabet, character), []).append((filename, zf.read(name)))
    return groups


def _preprocess(paths: list[Path]) -> dict:
    """Decode and downsample every drawing; characters in several zips (Greek, Latin) are kept once."""
    groups: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    for path in paths:
        for key, files in _read_zip(path).items():
            groups.setdefault(key, files)
    keys = sorted(groups)
    for key in keys:
        if len(groups[key]) != DRAWERS:
            raise ValueError(f"{key[0]}/{key[1]} has {len(groups[key])} drawings, expected {DRAWERS}")
    ink = np.stack([np.stack([read_ink(png) for _, png in groups[key]]) for key in keys])
    images = downsample(torch.from_numpy(ink))
    return {
        "version": CACHE_VERSION,
        "images": images,
        "alphabets": [a for a, _ in keys],
        "characters": [c for _, c in keys],
    }


def characters_cache_path(files: tuple[str, ...] | list[str]) -> Path:
    """Where the preprocessed tensors of `files` are cached: named after their checksums and the settings."""
    sums = [FILES[name].checksum[:16] for name in files]
    return cache_root() / "omniglot" / f"chars-{'-'.join(sums)}-{IMAGE_SIZE}px-v{CACHE_VERSION}.pt"


def load_characters(
    files: tuple[str, ...] | list[str] = MINIMAL,
    root: str | os.PathLike | None = None,
    download_missing: bool = True,
    base_url: str | None = None,
) -> CharacterSet:
    """All characters of the given image zips, preprocessed once and then read from the tensor cache."""
    paths = [omniglot_file(name, root, download_missing, base_url) for name in files]
    cache = characters_cache_path(files)
    payload = None
    if cache.exists():
        try:
            payload = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache is rebuilt, never trusted
            payload = None
    if payload is None or payload.get("version") != CACHE_VERSION:
        payload = _preprocess(paths)
        save_tensors(payload, cache)
    return CharacterSet(payload["images"], list(payload["alphabets"]), list(payload["characters"]))


@dataclass(frozen=True)
class LakeRuns:
    """The 20 within-alphabet 20-way one-shot runs of Lake et al. (2015), as binary 105x105 images.

    `train_ink: [20 runs, 20, 105, 105]` bool, one drawing per class (class i = `training/classNN`);
    `test_ink: [20, 20, 105, 105]` bool; `test_labels: [20, 20]` int64, the right class of each test image.
    """

    train_ink: Tensor
    test_ink: Tensor
    test_labels: Tensor

    def train_images(self) -> Tensor:
        """`[20, 20, 1, 28, 28]` float32 in [0, 1], preprocessed like the training images."""
        return downsample(self.train_ink).unsqueeze(2).float() / 255

    def test_images(self) -> Tensor:
        return downsample(self.test_ink).unsqueeze(2).float() / 255


def load_lake_runs(
    root: str | os.PathLike | None = None, download_missing: bool = True, base_url: str | None = None
) -> LakeRuns:
    """Read `all_runs.zip`: each run's 20 training drawings, 20 test drawings and the answers."""
    path = omniglot_file("all_runs.zip", root, download_missing, base_url)
    train, test, labels = [], [], []
    with zipfile.ZipFile(path) as zf:
        for run in range(1, 21):
            lines = zf.read(f"run{run:02d}/class_labels.txt").decode().split()
            pairs = sorted(zip(lines[0::2], lines[1::2], strict=True))  # (test item, its training class)
            classes = sorted({t for _, t in pairs})
            train.append(np.stack([read_ink(zf.read(c)) for c in classes]))
            test.append(np.stack([read_ink(zf.read(item)) for item, _ in pairs]))
            labels.append([classes.index(t) for _, t in pairs])
    return LakeRuns(torch.from_numpy(np.stack(train)), torch.from_numpy(np.stack(test)), torch.tensor(labels))


def file_status(root: str | os.PathLike | None = None) -> list[tuple[str, str, str]]:
    """(file, status, detail) for every Omniglot file: "ok", "missing" or "corrupt"."""
    folder = omniglot_folder(root)
    rows = []
    for name, remote in FILES.items():
        path = folder / name
        if not path.exists():
            rows.append((name, "missing", f"get it from {remote.url}"))
            continue
        actual = file_checksum(path, remote.algorithm)
        if actual == remote.checksum:
            rows.append((name, "ok", f"{remote.algorithm} {actual[:16]}..."))
        else:
            rows.append((name, "corrupt", f"{remote.algorithm} {actual} != {remote.checksum}"))
    return rows
