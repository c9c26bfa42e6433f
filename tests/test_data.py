"""Omniglot files: checksums, downloads against a local server, atomic extraction, the tensor cache."""

from __future__ import annotations

import http.server
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import serve_folder

from mamlbook.cli import main
from mamlbook.config import data_root
from mamlbook.data import (
    FILES,
    ChecksumError,
    DataError,
    DataMissingError,
    downsample,
    extract,
    load_characters,
    load_lake_runs,
    omniglot_file,
    omniglot_folder,
)
from mamlbook.data import omniglot as omniglot_data

SHARED = Path(os.environ.get("MAMLBOOK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "omniglot"
SMALL1 = "images_background_small1.zip"
needs_data = pytest.mark.skipif(
    not (SHARED / SMALL1).exists(), reason=f"Omniglot files not found in {SHARED} (set MAMLBOOK_DATA)"
)
pytestmark = needs_data


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own derived-data cache; the shared data root is read-only."""
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MAMLBOOK_DATA", str(SHARED.parent))
    omniglot_data._verified.clear()


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror folder; under /cutoff/ it announces a file's full length and sends half."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.startswith("/cutoff/"):
            body = Path(self.directory, "good", self.path.removeprefix("/cutoff/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """http://127.0.0.1:PORT with good/, corrupt/ (one byte flipped) and truncated/ (first half) copies."""
    folder = tmp_path_factory.mktemp("mirror")
    for kind in ("good", "corrupt", "truncated"):
        (folder / kind).mkdir()
    for name in (SMALL1, "all_runs.zip"):
        data = (SHARED / name).read_bytes()
        (folder / "good" / name).write_bytes(data)
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        (folder / "corrupt" / name).write_bytes(bytes(flipped))
        (folder / "truncated" / name).write_bytes(data[: len(data) // 2])

    with serve_folder(folder, Handler) as url:
        yield url


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_DATA", str(tmp_path / "env"))
    assert omniglot_folder(tmp_path / "explicit") == tmp_path / "explicit" / "omniglot"
    assert omniglot_folder() == tmp_path / "env" / "omniglot"
    monkeypatch.delenv("MAMLBOOK_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "mamlbook" / "data"


def test_shared_files_match_published_checksums():
    for name in (SMALL1, "images_background_small2.zip", "all_runs.zip"):
        assert omniglot_file(name, download_missing=False) == SHARED / name


def test_download_from_local_server(tmp_path, mirror):
    path = omniglot_file(SMALL1, tmp_path, base_url=mirror + "/good")
    assert path == tmp_path / "omniglot" / SMALL1
    assert path.read_bytes() == (SHARED / SMALL1).read_bytes()
    assert leftovers(path.parent) == [SMALL1]


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_bad_download_leaves_nothing(tmp_path, mirror, kind):
    with pytest.raises(ChecksumError, match="expected f38eb80f"):
        omniglot_file(SMALL1, tmp_path, base_url=f"{mirror}/{kind}")
    assert leftovers(tmp_path / "omniglot") == []
    # A later run is not fooled: the file is still missing, and the good copy downloads fine.
    with pytest.raises(DataMissingError):
        omniglot_file(SMALL1, tmp_path, download_missing=False)
    assert omniglot_file(SMALL1, tmp_path, base_url=mirror + "/good").exists()


def test_download_cut_off_midway_leaves_nothing(tmp_path, mirror):
    with pytest.raises(DataError, match="cut off|stopped after"):
        omniglot_file(SMALL1, tmp_path, base_url=mirror + "/cutoff")
    assert leftovers(tmp_path / "omniglot") == []


def test_offline_error_names_file_url_and_folder(tmp_path):
    with pytest.raises(DataMissingError) as info:
        omniglot_file(SMALL1, tmp_path, base_url="http://127.0.0.1:9")  # discard port: nothing listens
    message = str(info.value)
    assert SMALL1 in message and "http://127.0.0.1:9/" in message and str(tmp_path / "omniglot") in message
    assert leftovers(tmp_path / "omniglot") == []


def test_missing_without_download_names_official_url(tmp_path):
    with pytest.raises(DataMissingError, match="raw.githubusercontent.com/brendenlake/omniglot") as info:
        omniglot_file("images_evaluation.zip", tmp_path, download_missing=False)
    assert str(tmp_path / "omniglot") in str(info.value)


def test_corrupt_file_on_disk_is_refused(tmp_path):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    (folder / SMALL1).write_bytes((SHARED / SMALL1).read_bytes()[:1000])
    with pytest.raises(ChecksumError, match="corrupt or incomplete"):
        omniglot_file(SMALL1, tmp_path)


def test_extract_is_atomic(tmp_path, monkeypatch):
    archive = SHARED / SMALL1

    def fail(self, path, *args, **kwargs):
        Path(path, "partial.png").write_bytes(b"x")
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(zipfile.ZipFile, "extractall", fail)
        with pytest.raises(OSError, match="disk full"):
            extract(archive, FILES[SMALL1], tmp_path)
    assert leftovers(tmp_path) == []
    target = extract(archive, FILES[SMALL1], tmp_path)
    assert target == tmp_path / "images_background_small1"
    assert len(list(target.glob("*/*/*.png"))) == 2720
    runs = extract(SHARED / "all_runs.zip", FILES["all_runs.zip"], tmp_path)
    assert (runs / "run01" / "class_labels.txt").exists()
    assert leftovers(tmp_path) == ["all_runs", "images_background_small1"]


def test_downsample_keeps_ink_mass_and_polarity():
    ink = torch.zeros(2, 105, 105, dtype=torch.bool)
    ink[1, 30:75, 50:56] = True  # a vertical stroke 6 pixels wide
    small = downsample(ink)
    assert small.shape == (2, 28, 28) and small.dtype == torch.uint8
    assert small[0].max() == 0
    mass = small[1].double().sum() / 255 * (105 / 28) ** 2
    assert mass.item() == pytest.approx(45 * 6, rel=0.05)
    assert downsample(torch.ones(105, 105, dtype=torch.bool)).min() == 255


def test_characters_preprocessed_once_then_cached(tmp_path, monkeypatch):
    chars = load_characters()
    assert chars.images.shape == (242, 20, 28, 28) and chars.images.dtype == torch.uint8
    assert len(chars.alphabet_names()) == 8  # Greek and Latin are in both small zips, kept once
    assert sum(a == "Greek" for a in chars.alphabets) == 24
    # Ink = 1: strokes are a small fraction of each image, and some pixels are solid ink.
    assert chars.images.float().mean() / 255 < 0.2 and chars.images.max() == 255
    cached = list((tmp_path / "cache" / "omniglot").glob("*.pt"))
    assert len(cached) == 1 and "f38eb80f801274ac" in cached[0].name
    monkeypatch.setattr(omniglot_data, "_preprocess", lambda paths: pytest.fail("cache was not used"))
    again = load_characters()
    assert torch.equal(again.images, chars.images) and again.characters == chars.characters


def test_damaged_cache_is_rebuilt(tmp_path):
    cached = omniglot_data.characters_cache_path(omniglot_data.MINIMAL)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a tensor file")
    assert load_characters().images.shape[0] == 242
    assert torch.load(cached, weights_only=True)["images"].shape[0] == 242


def test_lake_runs():
    runs = load_lake_runs()
    assert runs.train_ink.shape == (20, 20, 105, 105) and runs.test_ink.dtype == torch.bool
    for labels in runs.test_labels:
        assert sorted(labels.tolist()) == list(range(20))  # every class tested once per run
    assert runs.train_images().shape == (20, 20, 1, 28, 28)
    assert runs.test_labels[0, 0] == 7  # run01/test/item01 is run01/training/class08


def test_cli_verify_and_fetch(tmp_path, mirror, capsys):
    assert main(["data", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"{SMALL1}   ok" in out and "images_evaluation.zip          missing" in out
    root = tmp_path / "root"
    assert (
        main(["data", "fetch", "omniglot", "--files", SMALL1, "--root", str(root), "--mirror", mirror + "/good"]) == 0
    )
    assert (root / "omniglot" / "images_background_small1" / "Greek").is_dir()
    shutil.copy(SHARED / SMALL1, root / "omniglot" / "all_runs.zip")  # the wrong file under a known name
    assert main(["data", "verify", "--root", str(root)]) == 1
    assert "all_runs.zip                   corrupt" in capsys.readouterr().out
    assert main(["data", "fetch", "omniglot", "--files", "all_runs.zip", "--root", str(root)]) == 2
    assert "corrupt or incomplete" in capsys.readouterr().err


def test_read_only_root_without_the_file_says_where_to_put_it(tmp_path):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(DataMissingError, match="not writable") as info:
            omniglot_file(SMALL1, tmp_path, base_url="http://127.0.0.1:9")
        assert str(folder) in str(info.value) and SMALL1 in str(info.value)
    finally:
        folder.chmod(0o700)
