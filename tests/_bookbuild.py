"""Build the Jupyter Book once per test session, executing every chapter at smoke size.

Both tests/test_book.py and tests/test_browser.py need the same build; building twice would double
the slowest part of the suite, so the build is cached here for the whole pytest process.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
BUILD_TIMEOUT_S = 1200


@functools.cache
def build_book() -> subprocess.CompletedProcess:
    """`jupyter-book build . -W -n --keep-going` with MAMLBOOK_SMOKE=1, into _build/html.

    Raises AssertionError carrying the build log's tail and each failed notebook's traceback.
    """
    jb = Path(sys.executable).with_name("jupyter-book")
    # A fresh output folder: pages left from an older build must not pass for current ones.
    shutil.rmtree(HTML, ignore_errors=True)
    # --all: Sphinx would otherwise reuse pages executed at another size (smoke or full) by an earlier build.
    command = [str(jb), "build", str(ROOT), "--all", "-W", "-n", "--keep-going"]
    env = {**os.environ, "MAMLBOOK_SMOKE": "1"}
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # without terminal colours
    if result.returncode != 0 or not (HTML / "index.html").exists():
        reports = sorted((HTML / "reports").rglob("*.err.log")) if (HTML / "reports").exists() else []
        details = "\n\n".join(f"--- {p.relative_to(ROOT)} ---\n{p.read_text()[-6000:]}" for p in reports)
        tail = "\n".join(log.splitlines()[-150:])
        raise AssertionError(
            f"book build failed (exit {result.returncode}): {' '.join(command)}\n"
            f"{details}\n--- build log (tail) ---\n{tail}"
        )
    return result


def execution_times(result: subprocess.CompletedProcess) -> dict[str, float]:
    """Seconds each chapter took to execute, from myst-nb's "Executed notebook in N seconds" lines."""
    log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    found = re.findall(r"book/(\w+)\.md: Executed notebook in ([0-9.]+) seconds", log)
    return {chapter: float(seconds) for chapter, seconds in found}


def pages() -> list[Path]:
    """Every HTML page of the built book (the theme's own assets and the execution reports excluded)."""
    skip = {"_static", "_sources", "_images", "reports"}
    return sorted(p for p in HTML.rglob("*.html") if not skip & set(p.relative_to(HTML).parts))
