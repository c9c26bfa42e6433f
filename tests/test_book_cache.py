"""Incremental builds redo only what changed (book/_ext/book_cache.py on top of jupyter-cache).

A two-chapter book with the real extension and execution settings is built five times; each chapter
appends its name to a log when it executes, so the log says exactly what each build re-executed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.book

CHAPTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Chapter {name}

{prose}

```{{code-cell}} ipython3
import os
from pathlib import Path

with Path(os.environ["EXECUTION_LOG"]).open("a") as log:
    log.write("{name}\\n")
print("{output}")
```
"""


def write_chapter(book: Path, name: str, prose: str = "Some prose.", output: str = "hello") -> None:
    (book / f"{name}.md").write_text(CHAPTER.format(name=name, prose=prose, output=output))


def make_book(book: Path) -> None:
    real = yaml.safe_load((ROOT / "_config.yml").read_text())
    config = {
        "title": "cache test",
        "only_build_toc_files": True,
        "execute": {**real["execute"]},
        "sphinx": {
            "local_extensions": {"book_cache": str(ROOT / "book" / "_ext")},
            "config": {"book_cache_inputs": ["pkg"]},
        },
        # A repository URL is set here, so the chapters get launch buttons (the book itself has none).
        "repository": {"url": "https://github.com/example/mamlbook", "branch": "main"},
        "launch_buttons": real["launch_buttons"],
        "html": {"use_repository_button": False},
    }
    assert config["execute"]["execute_notebooks"] == "cache", "the book builds through jupyter-cache"
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: a\n  - file: b\n")
    (book / "intro.md").write_text("# Intro\n\nA test book.\n")
    write_chapter(book, "a")
    write_chapter(book, "b")
    (book / "pkg").mkdir()
    (book / "pkg" / "helper.py").write_text("VALUE = 1\n")


def build(book: Path, log: Path) -> tuple[list[str], float, str]:
    """Build (as `make book` does: no --all); return the chapters executed, the seconds taken and
    the build's log."""
    before = log.read_text().split() if log.exists() else []
    jb = Path(sys.executable).with_name("jupyter-book")
    env = {**os.environ, "EXECUTION_LOG": str(log), "MAMLBOOK_SMOKE": "1"}
    start = time.perf_counter()
    result = subprocess.run(
        [str(jb), "build", str(book), "-W", "-n", "--keep-going"], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    after = log.read_text().split() if log.exists() else []
    return after[len(before) :], seconds, result.stdout + result.stderr


def test_rebuilds_execute_only_what_changed(tmp_path):
    book, log = tmp_path / "book", tmp_path / "executions.log"
    book.mkdir()
    make_book(book)
    html = book / "_build" / "html"

    executed, first, _ = build(book, log)
    assert sorted(executed) == ["a", "b"]
    # Every chapter page offers its executed notebook, outputs included, and launch buttons.
    notebook = html / "_sources" / "a.ipynb"
    assert notebook.exists() and '"hello' in notebook.read_text()
    page = (html / "a.html").read_text()
    assert "_sources/a.ipynb" in page and "mybinder.org" in page

    executed, unchanged, output = build(book, log)
    assert executed == [], "an unchanged rebuild executes nothing"
    assert "book_cache: inputs changed" not in output

    write_chapter(book, "a", prose="Edited prose, the same code.")
    executed, prose, _ = build(book, log)
    assert executed == [], "a prose-only edit executes nothing"
    assert "Edited prose" in (html / "a.html").read_text(), "the edited page was rebuilt"

    write_chapter(book, "b", output="changed code")
    executed, code, _ = build(book, log)
    assert executed == ["b"], "a code edit re-executes that chapter alone"
    assert "changed code" in (html / "b.html").read_text()

    (book / "pkg" / "helper.py").write_text("VALUE = 2\n")
    executed, package, output = build(book, log)
    assert sorted(executed) == ["a", "b"], "a change to the package re-executes every chapter"
    assert "inputs changed (changed: pkg/helper.py)" in output, "the log names the file that caused it"
    print(
        f"build times: full {first:.1f} s, unchanged {unchanged:.1f} s, prose {prose:.1f} s, "
        f"code {code:.1f} s, package {package:.1f} s"
    )


def test_the_log_says_why_everything_re_executes():
    """describe_change names the changed, added and removed inputs, or the smoke switch."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("book_cache", ROOT / "book" / "_ext" / "book_cache.py")
    book_cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book_cache)
    old = {"smoke": False, "files": {"pkg/a.py": "01", "pkg/b.py": "02", "pkg/gone.py": "03"}}
    new = {"smoke": False, "files": {"pkg/a.py": "01", "pkg/b.py": "ff", "pkg/new.py": "04"}}
    assert book_cache.describe_change(old, new) == "changed: pkg/b.py; added: pkg/new.py; removed: pkg/gone.py"
    assert "smoke switch changed (False -> True)" in book_cache.describe_change(old, {**old, "smoke": True})
    many = {"smoke": False, "files": {f"pkg/{i}.py": "00" for i in range(8)}}
    assert book_cache.describe_change({"smoke": False, "files": {}}, many).endswith("and 3 more")
    # The key follows every file's bytes and the switch.
    files = {"pkg/a.py": "01" * 32}
    assert book_cache.inputs_hash(files, False) != book_cache.inputs_hash(files, True)
    assert book_cache.inputs_hash(files, False) != book_cache.inputs_hash({"pkg/a.py": "02" * 32}, False)
