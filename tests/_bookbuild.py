"""Build the Jupyter Book once per test run from the chapters' executed notebooks.

The chapters are executed once, as nbmake tests (`pytest --nbmake book`, see tests/_chapters.py).
This build must not run them again, yet should be the build a reader gets: the same sources, the
same configuration (`make book`'s, through jupyter-cache). So it happens in a staging copy of the
book (`_build/test-book/`) whose execution cache is filled beforehand with those executed
notebooks: myst-nb finds every chapter in the cache (the cache keys on the code cells, which
jupytext and myst-nb read identically; checked before the build) and executes nothing. Only the
chapters' size differs from the published book (smoke). Both tests/test_book.py and
tests/test_browser.py use it; under pytest-xdist they may run in two workers, so the build
happens once per test run under a file lock, and the other worker reads its recorded outcome.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
from _chapters import ROOT, Execution, chapter_docnames, execute_chapter, run_id

STAGE = ROOT / "_build" / "test-book"
HTML = STAGE / "_build" / "html"
# This run's build outcome (command, exit status, log), so a second xdist worker does not rebuild.
RECORD = ROOT / "_build" / "test-book.json"
BUILD_TIMEOUT_S = 1200


@functools.cache
def executions() -> dict[str, Execution]:
    """Every chapter executed in this test run (by its nbmake test, or here if that has not run)."""
    return {doc: execute_chapter(doc) for doc in chapter_docnames()}


def _book_cache_module():
    """book/_ext/book_cache.py, whose hash of the package and results the cache must carry."""
    spec = importlib.util.spec_from_file_location("book_cache", ROOT / "book" / "_ext" / "book_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stage() -> None:
    """The book's sources in STAGE, with its jupyter-cache holding this run's executed chapters."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import read_myst_markdown_notebook

    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    shutil.copytree(ROOT / "book", STAGE / "book", ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, STAGE / name)
    # The package (hashed by book_cache) and the MathJax copy (book_html) are the repository's own.
    (ROOT / ".cache").mkdir(exist_ok=True)
    for name in (".cache", "mamlbook"):
        (STAGE / name).symlink_to(ROOT / name)

    cache_dir = STAGE / "_build" / ".jupyter_cache"
    cache = get_cache(cache_dir)
    for doc, execution in executions().items():
        notebook = nbformat.read(execution.notebook, nbformat.NO_CONVERT)
        for cell in notebook.cells:
            cell.metadata.pop("execution", None)  # nbmake's timings: not part of the source
        as_myst_nb_reads_it = read_myst_markdown_notebook((ROOT / f"{doc}.md").read_text())
        if cache.create_hashed_notebook(notebook)[1] != cache.create_hashed_notebook(as_myst_nb_reads_it)[1]:
            raise AssertionError(f"{doc}: jupytext and myst-nb read different code cells; the build would run it")
        cache.cache_notebook_bundle(CacheBundleIn(notebook, str(STAGE / f"{doc}.md")), check_validity=False)
    book_cache = _book_cache_module()
    key = book_cache.inputs_hash(book_cache.input_files(STAGE, ["mamlbook", "book/results"]), smoke=True)
    (cache_dir / book_cache.KEY_FILE).write_text(key + "\n")


@functools.cache
def build_book() -> subprocess.CompletedProcess:
    """`jupyter-book build -W -n --keep-going` of the staged book, into _build/test-book/_build/html.

    Built once per test run (a file lock; a later caller, in this process or another xdist
    worker, gets the recorded outcome). Raises AssertionError naming chapters that failed to
    execute (their own tests show the traceback), or carrying the build log's tail.
    """
    failed = [e for e in executions().values() if not e.ok]
    if failed:
        raise AssertionError(
            "chapters failed to execute, so the book cannot be built; see their tests "
            "(`pytest --nbmake book`): " + ", ".join(f"{e.docname}: {e.error_summary}" for e in failed)
        )
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    with open(RECORD.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = json.loads(RECORD.read_text()) if RECORD.exists() else {}
        if saved.get("run_id") == run_id():
            result = subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"], saved["stderr"])
        else:
            result = _build()
            fields = {"run_id": run_id(), "args": result.args, "returncode": result.returncode}
            RECORD.write_text(json.dumps({**fields, "stdout": result.stdout, "stderr": result.stderr}))
    log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # without terminal colours
    if result.returncode != 0 or not (HTML / "index.html").exists():
        problems = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
        tail = "\n".join(log.splitlines()[-60:])
        raise AssertionError(
            f"book build failed (exit {result.returncode}): {' '.join(map(str, result.args))}\n"
            + "\n".join(problems[:60])
            + f"\n--- build log (tail) ---\n{tail}"
        )
    return result


def _build() -> subprocess.CompletedProcess:
    """Stage the book and build it (no checks: build_book reads the outcome)."""
    _stage()
    jb = Path(sys.executable).with_name("jupyter-book")
    command = [str(jb), "build", str(STAGE), "-W", "-n", "--keep-going"]
    env = {**os.environ, "MAMLBOOK_SMOKE": "1"}
    return subprocess.run(
        command, cwd=STAGE, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )


def executed_during_build(result: subprocess.CompletedProcess) -> list[str]:
    """Pages myst-nb executed during the build instead of reading them from the cache."""
    log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    return re.findall(r"(\S+\.md): Executing notebook", log)


def pages(html: Path = HTML) -> list[Path]:
    """Every HTML page of the built book under `html` (the theme's own assets excluded)."""
    skip = {"_static", "_sources", "_images", "reports"}
    return sorted(p for p in html.rglob("*.html") if not skip & set(p.relative_to(html).parts))
