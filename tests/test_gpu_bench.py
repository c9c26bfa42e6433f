"""scripts/gpu-bench.sh: its dry run (the GPU pipeline on the CPU at a tiny size) writes a typed
bench-gpu.json with both problems and both precisions, and the script refuses what it does not know."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mamlbook.bench.runner import read_rows

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-bench.sh"


def _env() -> dict[str, str]:
    """This interpreter's environment first on PATH: the script calls `python3`, as on a GPU machine."""
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=_env(), timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu-bench")
    return _script("--dry-run", "--out", str(out)), out


def test_dry_run_writes_both_problems_in_both_precisions(dry_run) -> None:
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = out / "bench-gpu.json"
    assert f"cp {result} book/results/" in done.stdout
    assert (out / "bench-gpu.log").is_file()
    rows = read_rows(result)  # typed: a missing field fails here
    assert {row.problem for row in rows} == {"omniglot-5w1s", "sinusoid"}
    assert {row.device for row in rows} == {"cpu"}
    for problem in ("omniglot-5w1s", "sinusoid"):
        ours = [row for row in rows if row.problem == problem and row.impl == "mamlbook"]
        assert {row.strategy for row in ours} == {"loop", "folded"}
        assert {(row.strategy, row.precision) for row in ours} == {
            (s, p) for s in ("loop", "folded") for p in ("fp32", "bf16")
        }
        # The peers run in full precision only.
        assert all(row.precision == "fp32" for row in rows if row.problem == problem and row.impl != "mamlbook")


def test_dry_run_names_the_peers_it_used(dry_run) -> None:
    done, out = dry_run
    peers = {row.impl for row in read_rows(out / "bench-gpu.json")} - {"mamlbook"}
    line = next(line for line in done.stdout.splitlines() if line.startswith("== peers:"))
    assert all(peer in line for peer in peers)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--bogus"], "unknown option '--bogus'"), (["--out"], "--out needs a folder")],
)
def test_refuses_unknown_options(args: list[str], message: str) -> None:
    done = _script(*args, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
    assert "see --help" in done.stderr


def test_syntax() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(SCRIPT)], check=True)


def test_the_faster_chapter_says_whether_a_gpu_result_is_stored() -> None:
    """The chapter's sentence and the results folder agree: the sentence goes when bench-gpu.json comes."""
    root = Path(__file__).resolve().parents[1]
    chapter = (root / "book" / "faster.md").read_text()
    stored = (root / "book" / "results" / "bench-gpu.json").exists()
    assert ("No GPU measurement is stored" in chapter) != stored
