"""PBC (Acevedo et al. 2020): normal peripheral blood cell images, found on disk and verified file by file.

The data set: 17,092 JPEG images (mostly 360x363 RGB) of single blood cells, photographed with a
CellaVision DM96 analyzer at the Hospital Clinic of Barcelona and labelled by clinical pathologists
into 8 classes. It is published on Mendeley Data (doi:10.17632/snkd93bnjr.1, CC BY 4.0: cite the
paper) as one zip, `PBC_dataset_normal_DIB.zip`, holding `PBC_dataset_normal_DIB/<class>/<file>.jpg`.

`mamlbook` never downloads it: the record publishes no checksum for the zip to verify a download
against, so a copy must be put in place by hand. Two copies are recognized under
`<data root>/pbc/`, both checked against a checksum list that sits beside them:

- the book's subset: `<class>/<file>.jpg`, 250 images per class, listed in `SHA256SUMS`;
- a full copy, unzipped (`PBC_dataset_normal_DIB/<class>/...`) or moved up (`<class>/...`), listed
  in `SHA256SUMS-full-dataset` (17,093 entries, one of them a macOS metadata file, `.DS_169665.jpg`).

The two lists are pinned by their own sha256 here, and every image found is hashed and compared
with its list entry: a changed, missing or unlisted file stops with an error that names it. From a
full copy, byte-identical duplicates are kept once and an image filed under two classes is left
out (the list itself shows both: equal hashes), as the subset already does.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..config import data_root
from .remote import ChecksumError, DataError, DataMissingError, file_checksum

DOI = "10.17632/snkd93bnjr.1"
DOI_URL = f"https://doi.org/{DOI}"
RECORD_URL = "https://data.mendeley.com/datasets/snkd93bnjr/1"
ZIP_NAME = "PBC_dataset_normal_DIB.zip"
ZIP_FOLDER = "PBC_dataset_normal_DIB"  # the zip's top folder; classes are its subfolders
LICENSE = "CC BY 4.0"
CITATION = (
    "Acevedo, A., Merino, A., Alférez, S., Molina, Á., Boldú, L., Rodellar, J. (2020). A dataset of microscopic "
    "peripheral blood cell images for development of automatic recognition systems. Data in Brief 30, 105474."
)
CLASSES = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")
SUBSET_LIST = "SHA256SUMS"
FULL_LIST = "SHA256SUMS-full-dataset"
# The checksum lists themselves, pinned: a list edited to match edited images is caught here.
LIST_SHA256 = {
    SUBSET_LIST: "54a3c8ce9e93d4e50adde2399487115d835620a204d3af5a7d54ae9bf1a73b0d",
    FULL_LIST: "fdfb6f5904dc1f2a080efd130ca539d8f0e33b06ffcc7a64e80469066bc04d36",
}
VARIANTS = {SUBSET_LIST: "subset", FULL_LIST: "full"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SHOWN = 8  # file names an error lists before it says "and N more"

_verified: dict[tuple, PBCFiles] = {}  # files checked in this process, by their names, sizes and times
_lists: dict[tuple, dict[str, str]] = {}


def pbc_folder(root: str | os.PathLike | None = None) -> Path:
    """The folder PBC is looked for in: `<data root>/pbc`."""
    return data_root(root) / "pbc"


def where_to_get(folder: Path) -> str:
    """The sentence every error ends with: where the data comes from and where it goes."""
    return (
        f"Get PBC (Acevedo et al. 2020, {LICENSE}) from {DOI_URL} ({RECORD_URL}): download {ZIP_NAME} and unzip it "
        f"into {folder}/, giving {folder}/{ZIP_FOLDER}/<class>/*.jpg, with the checksum list {FULL_LIST} (it comes "
        f"with the book's data folder, shared/data/pbc) beside it. mamlbook cannot download it for you: the record "
        f"publishes no checksum for the zip."
    )


@dataclass(frozen=True)
class PBCFiles:
    """The verified image files of a PBC copy, sorted by class, then file name.

    `paths[i]` is an image of class `labels[i]` (a name in `CLASSES`) with sha256 `checksums[i]`;
    `variant` is "subset" or "full"; `left_out` names files of the list not used, with why.
    """

    folder: Path
    variant: str
    paths: tuple[Path, ...]
    labels: tuple[str, ...]
    checksums: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...]

    @cached_property  # a study asks for it ~150 times; each hashes 2,000 lines
    def key(self) -> str:
        """sha256 of every file's name and checksum: names a cache of anything derived from exactly these files."""
        digest = hashlib.sha256(f"pbc {self.variant}\n".encode())
        for path, checksum in zip(self.paths, self.checksums, strict=True):
            digest.update(f"{checksum}  {path.parent.name}/{path.name}\n".encode())
        return digest.hexdigest()

    def counts(self) -> dict[str, int]:
        """Images per class."""
        return {name: self.labels.count(name) for name in CLASSES if name in self.labels}


def read_checksums(path: Path) -> dict[str, str]:
    """A `sha256sum` list as {relative path: hex digest}."""
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DataError(f"{path}, line {number}: not a sha256sum line: {line[:80]!r}")
        entries[name.lstrip("*")] = digest
    return entries


def _found(image_root: Path) -> dict[str, tuple[int, int]]:
    """`<class>/<file>` of every image in the class folders (hidden files are not images: skipped), sorted,
    with its size and modification time."""
    found = {}
    folders = [e for e in os.scandir(image_root) if e.is_dir() and not e.name.startswith(".")]
    for folder in sorted(folders, key=lambda e: e.name):
        for entry in sorted(os.scandir(folder.path), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.name.lower().endswith(IMAGE_SUFFIXES) or not entry.is_file():
                continue
            stat = entry.stat()
            found[f"{folder.name}/{entry.name}"] = (stat.st_size, stat.st_mtime_ns)
    return found


def _listed(entries: dict[str, str]) -> dict[str, str]:
    """The entries that are images (the full list names one macOS metadata file, `.DS_169665.jpg`)."""
    return {name: digest for name, digest in entries.items() if not name.rsplit("/", 1)[-1].startswith(".")}


def _name_some(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _choose_list(folder: Path, image_root: Path, found: list[str]) -> tuple[str, dict[str, str]]:
    """The checksum list this copy should match: the full list for the zip's layout, else the closer one."""
    candidates = [FULL_LIST] if image_root != folder else [SUBSET_LIST, FULL_LIST]
    present = [name for name in candidates if (folder / name).exists()]
    if not present:
        wanted = " or ".join(candidates)
        raise DataMissingError(f"{folder} holds PBC images but no checksum list ({wanted}). " + where_to_get(folder))
    lists = {name: _read_list(folder / name, LIST_SHA256[name]) for name in present}
    found_set = set(found)
    # The list the files differ least from: a subset copy with one stray file is still the subset.
    name = min(lists, key=lambda n: len(found_set.symmetric_difference(lists[n])))
    return name, lists[name]


def _read_list(path: Path, pinned: str) -> dict[str, str]:
    """The image entries of a checksum list whose own sha256 is `pinned`; read once per process while unchanged."""
    memo = (str(path.resolve()), *_stat(path), pinned)
    if memo not in _lists:
        actual = file_checksum(path)
        if actual != pinned:
            raise ChecksumError(
                f"{path} has sha256 {actual}, not the published list's {pinned}: the checksum list itself was "
                f"changed, so it cannot vouch for the images. " + where_to_get(path.parent)
            )
        _lists[memo] = _listed(read_checksums(path))
    return _lists[memo]


def _check(folder: Path, image_root: Path, list_name: str, expected: dict[str, str], found: list[str]) -> None:
    """Hash every image found; raise naming each missing, unlisted or changed file."""
    found_set = set(found)
    missing = sorted(set(expected) - found_set)
    unlisted = sorted(found_set - set(expected))
    changed = sorted(name for name in found if name in expected and file_checksum(image_root / name) != expected[name])
    if not (missing or unlisted or changed):
        return
    problems = []
    if changed:
        problems.append(f"{len(changed)} changed (sha256 differs from {list_name}): {_name_some(changed)}")
    if missing:
        problems.append(f"{len(missing)} missing (listed in {list_name}, not on disk): {_name_some(missing)}")
    if unlisted:
        problems.append(f"{len(unlisted)} not in {list_name}, so unverifiable: {_name_some(unlisted)}")
    kind = ChecksumError if changed else DataMissingError if missing else DataError
    raise kind(
        f"PBC in {image_root} ({VARIANTS[list_name]} copy, checked against {folder / list_name}) does not match its "
        f"checksum list: {'; '.join(problems)}. Restore these files (or remove stray ones). " + where_to_get(folder)
    )


def _deduplicate(expected: dict[str, str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Keep each image once: byte-identical copies within a class once, images filed under two classes never."""
    by_digest: dict[str, list[str]] = defaultdict(list)
    for name in sorted(expected):
        by_digest[expected[name]].append(name)
    keep, left_out = [], []
    for names in by_digest.values():
        classes = {name.split("/", 1)[0] for name in names}
        if len(classes) > 1:
            left_out += [(name, f"the same image is filed under {' and '.join(sorted(classes))}") for name in names]
        else:
            keep.append(names[0])
            left_out += [(name, f"byte-identical to {names[0]}") for name in names[1:]]
    return sorted(keep), sorted(left_out)


def pbc_files(root: str | os.PathLike | None = None) -> PBCFiles:
    """The verified image files of the PBC copy under `<data root>/pbc` (see the module docstring).

    Hashing 2,000 files takes a fraction of a second; a process hashes a copy once while no file's
    size or modification time changes.
    """
    folder = pbc_folder(root)
    image_root = folder / ZIP_FOLDER if (folder / ZIP_FOLDER).is_dir() else folder
    if not image_root.is_dir():
        raise DataMissingError(f"PBC is not in {folder}: the folder does not exist. " + where_to_get(folder))
    found = _found(image_root)
    if not found:
        raise DataMissingError(f"PBC is not in {folder}: it holds no <class>/*.jpg images. " + where_to_get(folder))
    lists = tuple((name, *_stat(folder / name)) for name in (SUBSET_LIST, FULL_LIST) if (folder / name).exists())
    memo = (str(image_root.resolve()), tuple(found.items()), lists)
    if memo in _verified:  # the same files, sizes and times, and the same lists: already checked
        return _verified[memo]
    found = list(found)
    list_name, expected = _choose_list(folder, image_root, found)
    _check(folder, image_root, list_name, expected, found)
    unknown = sorted({name.split("/", 1)[0] for name in expected} - set(CLASSES))
    if unknown:
        raise DataError(f"{folder / list_name} names classes PBC does not have: {', '.join(unknown)}")
    keep, left_out = _deduplicate(expected)
    _verified[memo] = PBCFiles(
        folder=image_root,
        variant=VARIANTS[list_name],
        paths=tuple(image_root / name for name in keep),
        labels=tuple(name.split("/", 1)[0] for name in keep),
        checksums=tuple(expected[name] for name in keep),
        left_out=tuple(left_out),
    )
    return _verified[memo]


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
