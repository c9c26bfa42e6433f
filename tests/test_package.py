"""`import mamlbook` is the library alone: no study, bench, command line or plotting code, and cheap
next to `import torch`."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mamlbook

ROOT = Path(__file__).resolve().parents[1]

# Layers above the library, and the plotting library that only writing a figure needs.
NOT_IMPORTED = ("mamlbook.studies", "mamlbook.bench", "mamlbook.cli", "matplotlib")

LIBRARY = ["mamlbook", "mamlbook.tasks", "mamlbook.models", "mamlbook.meta", "mamlbook.engine", "mamlbook.train"]
LIBRARY += ["mamlbook.reports", "mamlbook.data"]

# Seconds `import mamlbook` may add to `import torch` (both in a fresh interpreter). Measured on the
# 2-core development machine: 0.09 s (median of 5, torch itself 2.4 s), up to 0.3 s while other work
# loaded both cores; the bound is about 3x that worst case, so only a real regression (an eager heavy
# import) trips it.
ADDED_IMPORT_BOUND_S = 1.0

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import mamlbook
t2 = time.perf_counter()
print(json.dumps({"torch": t1 - t0, "mamlbook": t2 - t1, "modules": sorted(sys.modules)}))
"""


def probe() -> dict:
    """Import torch, then mamlbook, in a fresh interpreter: the seconds each took and the modules loaded."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_mamlbook_imports_only_the_library():
    modules = probe()["modules"]
    loaded = [m for m in modules if any(m == top or m.startswith(top + ".") for top in NOT_IMPORTED)]
    assert not loaded, f"import mamlbook imported {loaded}"


def test_import_mamlbook_adds_little_to_import_torch():
    # The least of three runs: noise from other processes only ever adds time.
    runs = [probe() for _ in range(3)]
    added = min(run["mamlbook"] for run in runs)
    torch_s = min(run["torch"] for run in runs)
    assert added < ADDED_IMPORT_BOUND_S, f"import mamlbook took {added:.2f} s after import torch ({torch_s:.2f} s)"


@pytest.mark.parametrize("name", LIBRARY)
def test_every_exported_name_exists(name):
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names {missing}, which it does not define"


def test_version_matches_the_distribution():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{mamlbook.__version__}"' in pyproject


def documented() -> set[str]:
    """Full names the API reference (book/reference/*.md) documents, by automodule :members: or one by one."""
    names: set[str] = set()
    for page in (ROOT / "book" / "reference").glob("*.md"):
        text = page.read_text()
        for module in re.findall(r"^\.\. automodule:: (\S+)\n   :members:", text, flags=re.M):
            names |= {f"{module}.{name}" for name in importlib.import_module(module).__all__}
        names |= set(re.findall(r"^\.\. auto(?:function|class|data):: (\S+)", text, flags=re.M))
        for name, module in re.findall(r"^\.\. py:\w+:: (\S+)\n   :module: (\S+)", text, flags=re.M):
            names.add(f"{module}.{name}")
    return names


def test_the_api_reference_documents_every_exported_name():
    pages = documented()
    short = {name.rsplit(".", 1)[-1] for name in pages}
    missing = [name for name in mamlbook.__all__ if name not in short]
    assert not missing, f"mamlbook.__all__ names {missing}, which book/reference/ does not document"
    for layer in LIBRARY[1:]:
        exported = importlib.import_module(layer).__all__
        missing = [name for name in exported if f"{layer}.{name}" not in pages]
        assert not missing, f"{layer}.__all__ names {missing}, which book/reference/ does not document"


def test_importing_the_package_in_a_notebook_prints_nothing():
    """A chapter's first cell imports the package: tqdm's "IProgress not found" warning (a kernel
    without ipywidgets) must not land in its output, while progress bars still draw."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    source = "import mamlbook, mamlbook.rl.trainer, mamlbook.tasks.fewshot\nfrom mamlbook.progress import tqdm\n"
    source += "for _ in tqdm(range(3), desc='bar'):\n    pass"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    text = "".join(out.get("text", "") for out in notebook.cells[0].outputs)
    assert "bar: 100%" in text or "3/3" in text  # the bar itself
    assert "Warning" not in text and "IProgress" not in text, text
