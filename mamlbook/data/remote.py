"""Getting one published file safely: download to `.part`, check its checksum, rename; extract atomically.

Nothing is ever written under a file's final name until its checksum has been verified, and an
extracted folder appears only once every member is on disk, so an interrupted or corrupt download
leaves nothing that a later run could mistake for data.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 16


class DataError(ValueError):
    """A data file is corrupt, truncated or could not be obtained."""


class ChecksumError(DataError):
    """A file's checksum differs from the published one."""


class DataMissingError(DataError, FileNotFoundError):
    """A data file is not on disk and could not be downloaded."""


@dataclass(frozen=True)
class RemoteFile:
    """A published file: where it lives, its checksum ("sha256" or "md5"), and the folder it extracts to."""

    name: str
    url: str
    checksum: str
    algorithm: str = "sha256"
    folder: str | None = None  # what extract() creates; defaults to the name without ".zip"

    @property
    def extract_folder(self) -> str:
        return self.folder or self.name.removesuffix(".zip")


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK * 16):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | os.PathLike, remote: RemoteFile) -> None:
    """Raise `ChecksumError` unless `path` holds exactly the published file."""
    actual = file_checksum(path, remote.algorithm)
    if actual != remote.checksum:
        raise ChecksumError(
            f"{path} has {remote.algorithm} {actual}, expected {remote.checksum}: the file is corrupt or "
            f"incomplete; delete it and download it again from {remote.url}"
        )


def download(remote: RemoteFile, folder: str | os.PathLike, url: str | None = None, timeout: float = 60.0) -> Path:
    """Download `remote` into `folder` (from `url`, default its published URL) and return the verified path.

    The bytes go to `<name>.part`, which is renamed to `<name>` only after the checksum matches; on
    any failure, Ctrl-C included, the `.part` file is removed and nothing else is left behind.
    """
    url = url or remote.url
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / remote.name
    part = folder / (remote.name + ".part")
    digest = hashlib.new(remote.algorithm)
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            announced = response.headers.get("Content-Length")
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if announced is not None and received != int(announced):
            raise DataError(f"download of {url} stopped after {received} of {announced} bytes; nothing was kept")
        if digest.hexdigest() != remote.checksum:
            raise ChecksumError(
                f"{url} gave a file with {remote.algorithm} {digest.hexdigest()}, expected {remote.checksum} "
                f"({received} bytes received); nothing was kept in {folder}"
            )
        os.replace(part, final)
    except http.client.IncompleteRead as exc:
        part.unlink(missing_ok=True)
        raise DataError(
            f"download of {url} was cut off after {received + len(exc.partial)} bytes; nothing was kept"
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DataMissingError(
            f"{remote.name} is not in {folder} and could not be downloaded from {url} ({reason}). "
            f"Download it yourself and place it in {folder}/"
        ) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return final


def extract(archive: str | os.PathLike, remote: RemoteFile, folder: str | os.PathLike) -> Path:
    """Unzip `archive` into `folder/<remote.extract_folder>`, which appears only once it is complete.

    Members go to a temporary folder beside the target, which is renamed into place at the end; an
    existing target is kept as it is.
    """
    folder = Path(folder)
    target = folder / remote.extract_folder
    if target.exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{remote.extract_folder}.", suffix=".tmp", dir=folder))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)  # zipfile drops absolute paths and ".." from member names
            tops = {name.split("/", 1)[0] for name in zf.namelist()}
        # Most zips hold one folder named like the zip; all_runs.zip holds run01..run20 directly.
        source = tmp / remote.extract_folder if tops == {remote.extract_folder} else tmp
        os.replace(source, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def save_tensors(payload: dict, path: Path) -> None:
    """`torch.save` to a temporary file beside `path`, then rename: readers never see half a file
    (the preprocessed-data caches of Omniglot, image folders and PBC)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
