"""The chapters as notebooks: MyST source -> `.ipynb` (jupytext) -> executed once per test run.

`pytest --nbmake book` collects one test per chapter (see the root `conftest.py`); the HTML build
test (`tests/_bookbuild.py`) renders the same executed notebooks instead of running the chapters a
second time. Whichever asks first executes a chapter, under a file lock, so that with pytest-xdist
two workers never run the same chapter: the other reads the recorded result.

Executed notebooks land in `_build/notebooks/<docname>.ipynb` (outputs included) beside a
`<docname>.json` record of this run's outcome; nbmake's own collector ignores `_build`.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "_build" / "notebooks"
CELL_TIMEOUT_S = 900
# Set once per pytest run (root conftest.py); pytest-xdist workers share the controller's id.
RUN_ID_VARIABLE = "MAMLBOOK_TEST_RUN"


def run_id() -> str:
    """This test run's id: executions recorded under another id are stale."""
    return os.environ.setdefault(RUN_ID_VARIABLE, uuid.uuid4().hex)


def is_chapter(path: Path) -> bool:
    """A MyST Markdown notebook (a jupytext header), as opposed to a plain Markdown page."""
    return path.suffix == ".md" and path.exists() and path.read_text().startswith("---\njupytext:")


def toc_docnames() -> list[str]:
    """Every page of `_toc.yml`, in reading order (root first)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections", []))

    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part["chapters"])
    return names


def chapter_docnames() -> list[str]:
    """The pages of the table of contents that are notebooks, e.g. `book/why`."""
    return [doc for doc in toc_docnames() if is_chapter(ROOT / f"{doc}.md")]


@dataclass(frozen=True)
class Execution:
    """What executing one chapter gave: the executed notebook, its time and its error, if any."""

    docname: str
    notebook: Path
    seconds: float
    error_summary: str | None = None
    error_trace: str | None = None
    failing_cell: int | None = None

    @property
    def ok(self) -> bool:
        return self.error_summary is None


def convert(docname: str) -> Path:
    """`book/<name>.md` as a notebook without outputs at `_build/notebooks/book/<name>.ipynb`."""
    target = NOTEBOOKS / f"{docname}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    notebook = jupytext.read(ROOT / f"{docname}.md")
    nbformat.write(notebook, target)
    return target


def execute_chapter(docname: str, timeout: int = CELL_TIMEOUT_S) -> Execution:
    """Execute a chapter once in this test run (nbmake's runner); later calls read the record."""
    from nbmake.nb_run import NotebookRun

    record = NOTEBOOKS / f"{docname}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    with open(NOTEBOOKS / f"{docname}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.exists():
            saved = json.loads(record.read_text())
            if saved.pop("run_id") == run_id():
                return Execution(**{**saved, "notebook": Path(saved["notebook"])})
        notebook = convert(docname)
        start = time.perf_counter()
        result = NotebookRun(notebook, timeout).execute()
        seconds = time.perf_counter() - start
        # Outputs included: the HTML build renders them, and readers download this file.
        nbformat.write(result.nb, notebook)
        error = result.error
        execution = Execution(
            docname,
            notebook,
            seconds,
            error.summary if error else None,
            error.trace if error else None,
            error.failing_cell_index if error else None,
        )
        fields = {**execution.__dict__, "notebook": str(notebook), "run_id": run_id()}
        record.write_text(json.dumps(fields, indent=1))
        return execution
