"""Unfinished study jobs carried to another machine: their cache folders packed into one archive.

A study keeps each job's checkpoint in the cache (`config.cache_root()`), and a new machine starts with
an empty one. `--reuse` carries the finished jobs (a result file's rows), not the ones cut short: a job
stopped after an hour of a two-hour budget would start again from nothing. `pack` writes the folders of
the jobs still missing into a tar archive, with paths relative to the study's cache folder and without locks or
half-written files; `unpack` puts them back where the study looks, so each resumes from its checkpoint.
A folder the cache already holds is kept: there it is the same job, as far along or further.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

__all__ = ["CarryError", "carry_in", "carry_out", "carried", "pack", "unpack"]

# Left behind: a lock names a process of this machine; a dotted or .tmp/.partial file is a write in progress.
_SKIPPED_NAMES = ("run.lock",)
_SKIPPED_SUFFIXES = (".tmp", ".partial")


class CarryError(ValueError):
    """An archive that is not a set of job folders under the study's own cache folder."""


def _kept(path: Path) -> bool:
    return path.is_file() and not (
        path.name in _SKIPPED_NAMES or path.name.startswith(".") or path.suffix in _SKIPPED_SUFFIXES
    )


def pack(folders: Iterable[Path], root: Path, archive: Path) -> list[str]:
    """Write each of `folders` that holds files into `archive`, as paths relative to `root`; returns them.

    No folder to carry removes `archive`, so a finished study leaves none behind. The archive is written
    beside its final name and renamed, so an interrupted call never leaves half of one.
    """
    root = Path(root).resolve()
    carried: list[tuple[str, list[Path]]] = []
    for folder in folders:
        folder = Path(folder).resolve()
        if not folder.is_relative_to(root):
            raise CarryError(f"{folder} is not under the study's cache folder {root}")
        files = sorted(p for p in folder.rglob("*") if _kept(p))
        if files:
            carried.append((folder.relative_to(root).as_posix(), files))
    archive = Path(archive)
    if not carried:
        archive.unlink(missing_ok=True)
        return []
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for _, files in carried:
            for path in files:
                data = path.read_bytes()  # read once: a file growing meanwhile cannot break the archive
                info = tarfile.TarInfo(path.relative_to(root).as_posix())
                info.size, info.mtime, info.mode = len(data), int(path.stat().st_mtime), 0o644
                tar.addfile(info, io.BytesIO(data))
    os.replace(partial, archive)
    return [name for name, _ in carried]


def _safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Every member of `tar`, once each is known to be a plain file with a relative path that stays inside."""
    members = tar.getmembers()
    for member in members:
        path = PurePosixPath(member.name)
        if not member.isfile() or path.is_absolute() or ".." in path.parts:
            raise CarryError(f"{archive}: {member.name!r} is not a plain file with a relative path")
    return members


def carried(archive: Path) -> list[str]:
    """The relative paths of the files `archive` holds, sorted; CarryError if any member is unsafe to unpack.

    Reads the archive without writing anything: what `unpack` would check before putting jobs back.
    """
    with tarfile.open(archive, "r:gz") as tar:
        return sorted(member.name for member in _safe_members(tar, Path(archive)))


def unpack(archive: Path, root: Path, folders: Iterable[Path]) -> tuple[list[str], list[str], list[str]]:
    """Put the job folders of `archive` that are among `folders` (the study's plan) under `root`.

    Returns (restored, kept, other): the folders written, those left as the cache already had them, and
    those of the archive that the plan does not name (another configuration: its hash differs), left out.
    Every member must be a plain file with a relative path that does not climb out, or nothing is written.
    """
    root = Path(root).resolve()
    wanted = {Path(folder).resolve().relative_to(root).as_posix() for folder in folders}
    depths = {len(PurePosixPath(folder).parts) for folder in wanted}  # a study's job folders share one depth
    with tarfile.open(archive, "r:gz") as tar:
        by_folder: dict[str, list[tarfile.TarInfo]] = {}
        for member in _safe_members(tar, archive):
            path = PurePosixPath(member.name)
            folder = next((f for f in wanted if PurePosixPath(f) in path.parents), None)
            if folder is None:  # another configuration's job: named by the folder at the plan's depth
                depth = min(depths) if len(depths) == 1 and min(depths) < len(path.parts) else len(path.parts) - 1
                folder = PurePosixPath(*path.parts[:depth]).as_posix()
            by_folder.setdefault(folder, []).append(member)
        restored, kept, other = [], [], []
        for folder, files in sorted(by_folder.items()):
            if folder not in wanted:
                other.append(folder)
            elif (root / folder).exists():
                kept.append(folder)
            else:
                tar.extractall(root, members=files, filter="data")
                restored.append(folder)
    return restored, kept, other


def carry_in(archive: Path | None, root: Path, folders: Iterable[Path], progress: bool) -> None:
    """`unpack` a study's archive into its cache folder `root`, if one is named and exists, saying what it did."""
    if archive is None or not Path(archive).exists():
        return
    restored, kept, other = unpack(archive, root, folders)
    if progress:
        said = f"carried in {len(restored)} unfinished jobs from {archive}"
        said += f"; kept {len(kept)} the cache already had" if kept else ""
        said += f"; left out {len(other)} of other settings" if other else ""
        print(said, file=sys.stderr, flush=True)


def carry_out(archive: Path | None, root: Path, folders: Iterable[Path], progress: bool) -> None:
    """`pack` the folders of a study's unfinished jobs (under its cache folder `root`) into `archive`, if one
    is named, saying how many."""
    if archive is None:
        return
    packed = pack(folders, root, archive)
    if progress:
        where = f"to {archive}" if packed else f"(none: {archive} removed)"
        print(f"carried out {len(packed)} unfinished jobs {where}", file=sys.stderr, flush=True)
