"""TensorFlow and JAX load without a line on stderr, in a fresh process and in the tools chapter.

TensorFlow 2.21 logs through absl while it is imported, before absl's logging is initialized, and
those lines ("All log messages before absl::InitializeLog() is called are written to STDERR", a
oneDNN notice) ignore `TF_CPP_MIN_LOG_LEVEL` and go to file descriptor 2 directly. In a chapter they
become a cell's stderr, which fails `jupyter-book build -W`; only a fresh process shows them, so
every check here starts one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mamlbook.bench.frameworks import missing

ROOT = Path(__file__).resolve().parents[1]


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    """`code` in a new interpreter (nothing imported yet), stdout and stderr captured apart."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_native_stderr_is_dropped_inside_the_block_and_restored_after():
    done = _fresh_python(
        """
        import os, sys
        from mamlbook.memory import native_stderr_silenced
        os.write(2, b"before\\n")
        with native_stderr_silenced():
            os.write(2, b"native write, as C++ code does\\n")
            print("python's stderr is kept", file=sys.stderr)
        os.write(2, b"after\\n")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "before\npython's stderr is kept\nafter\n"


def test_a_failed_quiet_import_restores_stderr_and_keeps_its_message():
    done = _fresh_python(
        """
        import os
        from mamlbook.bench.frameworks.quiet import quiet_import
        try:
            quiet_import("mamlbook_no_such_module")
        except ImportError as exc:
            print(exc)
        os.write(2, b"stderr is back\\n")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "mamlbook_no_such_module" in done.stdout
    assert done.stderr == "stderr is back\n"


@pytest.mark.frameworks
@pytest.mark.parametrize(
    ("package", "code"),
    [
        ("tensorflow", "from mamlbook.bench.frameworks.tensorflow_maml import require_tensorflow as r; r()"),
        ("jax", "from mamlbook.bench.frameworks.jax_maml import require_jax as r; r()"),
    ],
    ids=["tensorflow", "jax"],
)
def test_the_quiet_path_imports_without_a_line_on_stderr(package, code):
    if missing(package):
        pytest.skip(f"{package} is not installed (the `frameworks` extra)")
    env_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if env_level not in (None, "2", "3"):
        pytest.skip(f"TF_CPP_MIN_LOG_LEVEL={env_level} is set here: TensorFlow logs what it is asked to")
    done = _fresh_python(code + f"\nimport sys; assert {package!r} in sys.modules")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.frameworks
def test_tools_chapter_full_size_prints_nothing_on_stderr_up_to_its_framework_imports(monkeypatch):
    """The tools chapter at full size (MAMLBOOK_SMOKE=0) in a fresh kernel, from its first cell to
    the first cell after which TensorFlow and JAX (where installed) are both loaded; no cell output
    may be a stderr stream.

    Not the whole chapter: at full size it took 76 s on this project's 2-core test machine, and the
    lines this guards against are printed once per process, on the first import; the cells after
    it run code that `tests/test_frameworks.py` covers.
    """
    if missing("tensorflow"):
        pytest.skip("TensorFlow is not installed (the `frameworks` extra)")
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MAMLBOOK_SMOKE", "0")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # the chapter relies on the package's default
    # ipykernel forwards writes to descriptor 2 into the cell's output only outside pytest: a kernel
    # that inherits PYTEST_CURRENT_TEST leaves native lines on the terminal (`--nbmake` misses them).
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    wanted = {"tensorflow"} | ({"jax"} if missing("jax") is None else set())
    notebook = jupytext.read(ROOT / "book" / "tools.md")
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "book")}}
    )
    remaining = f"import sys; print(sorted(set({sorted(wanted)!r}) - set(sys.modules)))"
    # The kernel forwards native writes to descriptor 2 from a thread, so a line may arrive during
    # the next execution: the probes' outputs are checked too, and a last cell waits for stragglers.
    # nbclient stores an executed cell at its index in the notebook: the probes get a slot at the end.
    chapter = list(notebook.cells)
    notebook.cells.append(nbformat.v4.new_code_cell())
    slot = len(notebook.cells) - 1
    executed: list[tuple[str, nbformat.NotebookNode]] = []
    loaded = False
    with client.setup_kernel():
        for index, cell in enumerate(chapter):
            client.execute_cell(cell, index)
            executed.append((f"cell {index}", cell))
            if cell.cell_type != "code":
                continue
            probe = nbformat.v4.new_code_cell(remaining)
            client.execute_cell(probe, slot)
            executed.append((f"probe after cell {index}", probe))
            if "".join(out.get("text", "") for out in probe.outputs).strip() == "[]":
                loaded = True
                break
        settle = nbformat.v4.new_code_cell("import time; time.sleep(1)")
        client.execute_cell(settle, slot)
        executed.append(("last cell", settle))
    assert loaded, f"the chapter never loaded {sorted(wanted)}: the test no longer reaches their import"
    stderr = [
        (where, out["text"])
        for where, cell in executed
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    ]
    assert not stderr, f"stderr in the executed cells: {stderr}"
