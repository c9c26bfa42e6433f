"""pytest plugin: with `--nbmake`, each chapter of the book is a test of its own, executed as a notebook.

nbmake collects `.ipynb` files; the chapters are MyST Markdown. This hook collects every chapter of
`_toc.yml` as one nbmake item that converts the chapter with jupytext and executes it (at smoke
size under `make test`), so a failing chapter fails a test named after it, with nbmake's traceback,
and `-n auto` (pytest-xdist) runs chapters in parallel. The executed notebooks are kept for the
HTML build test, which renders them instead of executing the chapters again (tests/_chapters.py).

Loaded by `-p chapter_notebooks` in pyproject.toml (`pythonpath` puts tests/ on the path), not as
a conftest.py: the test modules import helpers with `from conftest import ...`, which a second
conftest.py at the root would shadow.
"""

from __future__ import annotations

import os
from pathlib import Path

import _chapters
import pytest

ROOT = _chapters.ROOT


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist workers inherit the controller's test-run id; a plain run draws its own.
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        os.environ[_chapters.RUN_ID_VARIABLE] = worker["testrunuid"]
    _chapters.run_id()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if not parent.config.getoption("nbmake", default=False) or file_path.suffix != ".md":
        return None
    try:
        docname = file_path.resolve().relative_to(ROOT).with_suffix("").as_posix()
    except ValueError:
        return None
    if docname not in _chapters.chapter_docnames():
        return None
    return ChapterFile.from_parent(parent, path=file_path)


class ChapterFile(pytest.File):
    def collect(self):
        yield ChapterItem.from_parent(self, name=self.path.stem)


try:
    from nbmake.pytest_items import NotebookFailedException, NotebookItem
except ImportError:  # nbmake absent: no chapter tests, the rest of the suite still runs
    NotebookItem = pytest.Item

    class NotebookFailedException(Exception):  # noqa: N818 - nbmake's name
        pass


class ChapterItem(NotebookItem):
    """One chapter executed by nbmake's runner; failures print the failing cell's traceback."""

    def __init__(self, *, name: str, parent: ChapterFile, **kwargs) -> None:
        pytest.Item.__init__(self, name, parent, **kwargs)
        self.filename = str(parent.path)

    def runtest(self) -> None:
        from nbmake.nb_result import NotebookError, NotebookResult

        docname = self.path.resolve().relative_to(ROOT).with_suffix("").as_posix()
        execution = _chapters.execute_chapter(docname, self.config.getoption("nbmake_timeout"))
        self.user_properties.append(("seconds", round(execution.seconds, 1)))
        if not execution.ok:
            import nbformat

            error = NotebookError(execution.error_summary, execution.error_trace, execution.failing_cell)
            raise NotebookFailedException(NotebookResult(nbformat.read(execution.notebook, 4), error))

    def reportinfo(self):
        return self.path, 0, f"chapter {self.name}"
