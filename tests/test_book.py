"""The book builds, with every chapter executed at smoke size and warnings as errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from _bookbuild import HTML, ROOT, build_book, execution_times, pages

pytestmark = pytest.mark.book

CHAPTERS = ["why", "concepts", "algorithm", "math", "code", "omniglot", "medical", "faster", "better", "questions"]


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for entry in toc.get("chapters", []):
        files.append(entry["file"])
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part["chapters"]]
    return files


@pytest.fixture(scope="session")
def built() -> Path:
    build_book()
    return HTML


def test_toc_lists_the_chapters_in_order():
    files = toc_files()
    assert files[0] == "book/intro"
    present = [f for f in files if f.split("/")[-1] in CHAPTERS]
    assert present == [f"book/{c}" for c in CHAPTERS if f"book/{c}" in files]
    assert present[-1] == "book/questions", "the questions chapter comes last"
    for f in files:
        assert (ROOT / f"{f}.md").exists(), f"{f}.md is in _toc.yml but missing"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_is_a_myst_notebook_without_outputs(chapter):
    text = (ROOT / "book" / f"{chapter}.md").read_text()
    assert text.startswith("---\njupytext:"), "chapters are MyST Markdown notebooks with a jupytext header"
    assert "format_name: myst" in text
    assert "```{code-cell}" in text
    assert "os.environ" not in text, "chapters read the smoke switch through mamlbook.config only"
    for heading in ("## Key takeaways", "## Exercises", "## References"):
        assert heading in text, f"{chapter}.md lacks the skeleton's {heading!r}"


def test_every_chapter_was_built_and_executed(built):
    times = execution_times(build_book())
    assert set(times) == set(CHAPTERS), f"executed {sorted(times)}, expected every chapter"
    # For the record (and the closing notes): smoke-size execution time per chapter.
    (built.parent / "execution-times-smoke.txt").write_text("".join(f"{c} {t:.1f} s\n" for c, t in times.items()))
    for chapter in CHAPTERS:
        page = built / "book" / f"{chapter}.html"
        assert page.exists(), f"{page} was not built"
        html = page.read_text()
        assert "cell_output" in html, f"{chapter}: no cell produced output; was the notebook executed?"


def test_no_raw_glue_or_unresolved_references(built):
    for page in pages():
        html = page.read_text()
        assert "{glue:" not in html and "{cite}" not in html, f"{page}: unrendered role"
        assert not re.search(r"\?\?\?|\[Errno", html), f"{page}: unresolved reference or error text"


def test_mathjax_is_served_locally(built):
    math_pages = [p for p in pages() if 'class="math' in p.read_text()]
    assert math_pages, "no page has math; the math chapter should"
    for page in math_pages:
        html = page.read_text()
        assert "cdn.jsdelivr.net" not in html
        assert "_static/mathjax/tex-mml-chtml.js" in html
    assert (HTML / "_static" / "mathjax" / "tex-mml-chtml.js").exists()
