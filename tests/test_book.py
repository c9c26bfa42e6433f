"""The book builds from the chapters executed at smoke size, with warnings as errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from _bookbuild import HTML, ROOT, build_book, executed_during_build, executions, pages
from _chapters import chapter_docnames, toc_docnames

pytestmark = pytest.mark.book

# The reading order, part by part; an appendix and the API reference follow the questions.
PARTS = {
    "Foundations": ["why", "concepts", "algorithm", "math", "code"],
    "Applications": ["omniglot", "medical", "rl"],
    "Faster and better": ["faster", "better"],
    "Tools and outlook": ["tools", "outlook", "questions"],
}
CHAPTERS = [c for chapters in PARTS.values() for c in chapters]
APPENDIX = ["appendix/better-omniglot", "appendix/faster-details", "appendix/tools-details", "appendix/rl-details"]


def toc_files() -> list[str]:
    return toc_docnames()


def test_toc_groups_the_chapters_into_parts():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    captions = [part["caption"] for part in toc["parts"]]
    assert captions == [*PARTS, "Appendix", "Reference"]
    for part in toc["parts"]:
        if part["caption"] in PARTS:
            assert [e["file"] for e in part["chapters"]] == [f"book/{c}" for c in PARTS[part["caption"]]]
    assert chapter_docnames() == [f"book/{c}" for c in CHAPTERS + APPENDIX], "every chapter is a notebook"


@pytest.fixture(scope="session")
def built() -> Path:
    build_book()
    return HTML


def test_toc_lists_the_chapters_in_order():
    files = toc_files()
    assert files[0] == "book/intro"
    present = [f for f in files if f.removeprefix("book/") in CHAPTERS]
    assert present == [f"book/{c}" for c in CHAPTERS]
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


def test_every_chapter_was_built_from_its_executed_notebook(built):
    times = {doc.removeprefix("book/"): e.seconds for doc, e in executions().items()}
    assert set(times) == set(CHAPTERS + APPENDIX), f"executed {sorted(times)}, expected every chapter"
    # For the record: smoke-size execution time per chapter.
    (built.parent / "execution-times-smoke.txt").write_text("".join(f"{c} {t:.1f} s\n" for c, t in times.items()))
    for chapter in CHAPTERS + APPENDIX:
        page = built / "book" / f"{chapter}.html"
        assert page.exists(), f"{page} was not built"
        html = page.read_text()
        assert "cell_output" in html, f"{chapter}: no cell produced output; was the notebook executed?"
        # The executed notebook is offered for download beside the page.
        notebook = built / "_sources" / "book" / f"{chapter}.ipynb"
        assert notebook.exists() and f"_sources/book/{chapter}.ipynb" in html, f"{chapter}: no .ipynb download"


def test_the_build_reused_the_chapters_executions(built):
    result = build_book()
    assert executed_during_build(result) == [], "the book build executed chapters a second time"
    log = result.stdout + result.stderr
    assert log.count("Using cached notebook") == len(executions()), "every chapter came from the cache"


def test_no_launch_buttons_without_a_repository_url(built):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    if config.get("repository", {}).get("url"):
        pytest.skip("a repository URL is configured; tests/test_book_cache.py checks the buttons")
    for page in pages():
        html = page.read_text()
        assert "mybinder.org" not in html and "colab.research.google.com" not in html, page


def test_no_raw_glue_or_unresolved_references(built):
    for page in pages():
        html = page.read_text()
        assert "{glue:" not in html and "{cite}" not in html, f"{page}: unrendered role"
        assert not re.search(r"\?\?\?|\[Errno", html), f"{page}: unresolved reference or error text"


def prose(html: str) -> str:
    """A page's text outside code, scripts and styles: what a reader reads as sentences."""
    import html as entities

    html = re.sub(r"<(pre|code|script|style|textarea)\b[^>]*>.*?</\1>", " ", html, flags=re.S)
    return entities.unescape(re.sub(r"<[^>]+>", " ", html))


def test_prose_has_no_literal_markdown_or_mangled_options(built):
    """A glued sentence pasted as plain text shows its backticks, and `--reuse` becomes `–reuse` (smart
    dashes): a command a reader copies would then fail. Sentences that name commands are pasted as Markdown."""
    for page in pages():
        text = prose(page.read_text())
        at = text.find("`")
        assert at < 0, f"{page}: a literal backtick in prose: {text[max(at - 80, 0) : at + 80]!r}"
        mangled = re.search(r".{0,60}\s[\u2013\u2014][a-z]{2,}[-a-z]*.{0,20}", text)
        assert mangled is None, f"{page}: an option printed with a dash: {mangled.group(0)!r}"


def test_the_prose_reader_sees_what_a_reader_sees():
    page = "<p>Run <code>mamlbook study --reuse</code> or `x` \u2013carry</p><pre>`kept`</pre><script>`s`</script>"
    text = prose(page)
    assert "--reuse" not in text and "kept" not in text and "`x`" in text and "\u2013carry" in text


def test_mathjax_is_served_locally(built):
    math_pages = [p for p in pages() if 'class="math' in p.read_text()]
    assert math_pages, "no page has math; the math chapter should"
    for page in math_pages:
        html = page.read_text()
        assert "cdn.jsdelivr.net" not in html
        assert "_static/mathjax/tex-mml-chtml.js" in html
    assert (HTML / "_static" / "mathjax" / "tex-mml-chtml.js").exists()


def test_no_executed_chapter_prints_a_fallback_instead_of_a_value():
    """Chapters read typed results and fail loudly; none prints "not stored", "not found" and the like."""
    from notebook_scan import fallback_sentences

    problems = {}
    for docname, execution in executions().items():
        assert execution.ok, f"{docname} failed to execute"
        notebook = json.loads(execution.notebook.read_text())
        lines = fallback_sentences(notebook)
        if lines:
            problems[docname] = lines
    assert not problems, f"fallback text in executed chapters: {problems}"


def test_the_fallback_scan_finds_what_it_looks_for():
    from notebook_scan import fallback_sentences

    def notebook(*texts):
        outputs = [{"output_type": "stream", "name": "stdout", "text": t} for t in texts]
        return {"cells": [{"cell_type": "code", "outputs": outputs}]}

    glued = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "display_data", "data": {"text/plain": "'(not stored)'"}, "metadata": {}}]}]}
    assert fallback_sentences(glued) == ["cell 1: '(not stored)'"]
    bad = "the stored result holds no return after one step that this chapter recognizes"
    assert fallback_sentences(notebook("MAML after one step: -13.6", bad)) == [f"cell 1: {bad}"]
    assert fallback_sentences(notebook("book/results/sweep.json is missing; running it now")) != []
    assert fallback_sentences(notebook("MAML after one step: -13.6 (paper: -11.7)")) == []


def test_the_test_build_happens_once_per_run_and_is_read_back_by_other_workers(tmp_path, monkeypatch):
    """pytest-xdist runs test_book.py and test_browser.py in two workers: the second reads the first's build."""
    import subprocess

    import _bookbuild

    html = tmp_path / "html"
    html.mkdir()
    (html / "index.html").write_text("<html></html>")
    builds = []

    def fake_build() -> subprocess.CompletedProcess:
        builds.append(1)
        return subprocess.CompletedProcess(["jupyter-book", "build"], 0, "built\n", "")

    monkeypatch.setattr(_bookbuild, "RECORD", tmp_path / "test-book.json")
    monkeypatch.setattr(_bookbuild, "HTML", html)
    monkeypatch.setattr(_bookbuild, "executions", lambda: {})
    monkeypatch.setattr(_bookbuild, "_build", fake_build)
    first = _bookbuild.build_book.__wrapped__()  # the cached function, as a fresh worker calls it
    again = _bookbuild.build_book.__wrapped__()
    assert len(builds) == 1 and (first.returncode, again.stdout) == (0, "built\n")
    monkeypatch.setattr(_bookbuild, "run_id", lambda: "another test run")
    _bookbuild.build_book.__wrapped__()
    assert len(builds) == 2, "a record of an earlier test run was reused"
    monkeypatch.setattr(_bookbuild, "_build", lambda: subprocess.CompletedProcess(["jb"], 2, "", "WARNING: x\n"))
    monkeypatch.setattr(_bookbuild, "run_id", lambda: "a third run")
    with pytest.raises(AssertionError, match=r"(?s)exit 2.*WARNING: x"):
        _bookbuild.build_book.__wrapped__()
