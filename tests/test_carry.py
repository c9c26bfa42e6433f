"""Unfinished study jobs carried between machines (`studies.carry`): what is packed, what is restored,
what is refused. The policy studies' resume-on-another-machine check is in `_studies.interrupt_and_resume`."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from mamlbook.studies.carry import CarryError, carried, pack, unpack


def job_folder(root: Path, key: str, payload: bytes = b"weights") -> Path:
    """A job folder as a study leaves it mid-run: checkpoint, records, a snapshot, its lock and a write
    in progress."""
    folder = root / "studies" / "medical" / "meta" / key
    (folder / "snapshots").mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(payload)
    (folder / "metrics.jsonl").write_text('{"iteration": 200}\n')
    (folder / "snapshots" / "00025.pt").write_bytes(payload[::-1])
    (folder / "run.lock").write_text('{"host": "vm", "pid": 1}')
    (folder / ".checkpoint.pt.42.abc.tmp").write_bytes(b"half")
    return folder


def test_a_carried_job_arrives_whole_without_its_lock_or_half_written_files(tmp_path):
    here, there, archive = tmp_path / "here", tmp_path / "there", tmp_path / "medical.carry.tar.gz"
    first, second = job_folder(here, "aaaa", b"first"), job_folder(here, "bbbb", b"second")
    empty = here / "studies" / "medical" / "meta" / "cccc"  # a job never started: nothing to carry
    assert pack([first, second, empty], here, archive) == ["studies/medical/meta/aaaa", "studies/medical/meta/bbbb"]
    assert carried(archive) == sorted(
        f"studies/medical/meta/{key}/{name}" for key in ("aaaa", "bbbb")
        for name in ("checkpoint.pt", "metrics.jsonl", "snapshots/00025.pt")
    )  # fmt: skip
    planned = [there / folder.relative_to(here) for folder in (first, second, empty)]
    restored, kept, other = unpack(archive, there, planned)
    assert (restored, kept, other) == (["studies/medical/meta/aaaa", "studies/medical/meta/bbbb"], [], [])
    for folder in (first, second):
        arrived = there / folder.relative_to(here)
        assert sorted(p.relative_to(arrived).as_posix() for p in arrived.rglob("*") if p.is_file()) == [
            "checkpoint.pt", "metrics.jsonl", "snapshots/00025.pt"
        ]  # fmt: skip
        assert (arrived / "checkpoint.pt").read_bytes() == (folder / "checkpoint.pt").read_bytes()
        assert (arrived / "snapshots" / "00025.pt").read_bytes() == (folder / "snapshots" / "00025.pt").read_bytes()


def test_the_cache_keeps_its_own_folder_and_other_settings_are_left_out(tmp_path):
    here, there, archive = tmp_path / "here", tmp_path / "there", tmp_path / "carry.tar.gz"
    pack([job_folder(here, "aaaa", b"carried"), job_folder(here, "zzzz")], here, archive)
    own = job_folder(there, "aaaa", b"further along")
    restored, kept, other = unpack(archive, there, [own])  # the plan here has no job "zzzz"
    assert (restored, kept, other) == ([], ["studies/medical/meta/aaaa"], ["studies/medical/meta/zzzz"])
    assert (own / "checkpoint.pt").read_bytes() == b"further along"
    assert not (there / "studies" / "medical" / "meta" / "zzzz").exists()


def test_nothing_left_to_carry_removes_the_archive(tmp_path):
    archive = tmp_path / "carry.tar.gz"
    cache = tmp_path / "cache"
    pack([job_folder(cache, "aaaa")], cache, archive)
    assert archive.exists()
    assert pack([cache / "studies" / "medical" / "meta" / "never-started"], cache, archive) == []
    assert not archive.exists()


def test_a_folder_outside_the_cache_is_refused(tmp_path):
    with pytest.raises(CarryError, match="not under the study's cache folder"):
        pack([job_folder(tmp_path / "elsewhere", "aaaa")], tmp_path / "cache", tmp_path / "carry.tar.gz")


@pytest.mark.parametrize("kind", ["climbs out", "absolute", "link"])
def test_an_archive_with_a_path_out_of_the_cache_or_a_link_writes_nothing(tmp_path, kind):
    archive, root = tmp_path / "evil.tar.gz", tmp_path / "cache"
    folder = root / "studies" / "medical" / "meta" / "aaaa"
    with tarfile.open(archive, "w:gz") as tar:
        good = tarfile.TarInfo("studies/medical/meta/aaaa/checkpoint.pt")
        good.size = 1
        tar.addfile(good, io.BytesIO(b"x"))
        names = {"climbs out": "studies/medical/meta/aaaa/../../../../../evil", "absolute": str(tmp_path / "evil"),
                 "link": "studies/medical/meta/aaaa/x"}  # fmt: skip
        bad = tarfile.TarInfo(names[kind])
        if kind == "link":
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(bad)
        else:
            bad.size = 1
            tar.addfile(bad, io.BytesIO(b"x"))
    with pytest.raises(CarryError, match="not a plain file with a relative path"):
        carried(archive)
    with pytest.raises(CarryError, match="not a plain file with a relative path"):
        unpack(archive, root, [folder])
    assert not root.exists() and not (tmp_path / "evil").exists()
