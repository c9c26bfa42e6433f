"""Open every page of the built book in headless Chromium and check what a reader would see.

The site is served under a sub-path (`/mamlbook/`), as a project site on GitHub Pages is, and any
request outside it fails the test: a root-relative link or asset would work on a local server and
break once published. For each page: no console errors, every image loaded, the math typeset by
MathJax (no raw TeX left in the text), every internal link (and its #anchor) resolves, and each
chapter's notebook download is a notebook with outputs. The search page must find a chapter.
A PNG of each page is saved under _build/screenshots/. Skips where Chromium or chromedriver is
absent; CI installs both.

By default the book is built here from the chapters' smoke executions. `MAMLBOOK_SITE=_build/site`
checks a folder already built instead, such as the full-size site of `make site`:

    MAMLBOOK_SITE=_build/site .venv/bin/python -m pytest tests/test_browser.py
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _bookbuild import HTML, ROOT, build_book, pages
from conftest import serve_folder

pytestmark = pytest.mark.book

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "_build" / "screenshots"
PAGE_TIMEOUT_S = 60

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "headless Chromium is not installed (/usr/bin/chromium and /usr/bin/chromedriver); "
        "install the Debian packages chromium and chromium-driver, as .ci/run does",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver")


# The folder served: a site already built (MAMLBOOK_SITE), or the book built from the smoke executions.
SITE = Path(os.environ["MAMLBOOK_SITE"]).resolve() if os.environ.get("MAMLBOOK_SITE") else HTML
SUB_PATH = "/mamlbook"
OUTSIDE: list[str] = []  # requests for anything outside the sub-path, which a published site would not serve


class SubPathHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the book at /mamlbook/ only, like a GitHub project site; records requests elsewhere."""

    def translate_path(self, path: str) -> str:
        if path == SUB_PATH or path.startswith(SUB_PATH + "/"):
            return super().translate_path(path[len(SUB_PATH) :] or "/")
        OUTSIDE.append(path)
        return str(SITE / "does-not-exist")

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def server():
    site()
    with serve_folder(SITE, SubPathHandler) as url:
        yield url + SUB_PATH


@pytest.fixture(scope="session")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mamlbook-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    driver.set_script_timeout(PAGE_TIMEOUT_S)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Anchors(HTMLParser):
    """Collects every id (and legacy name) a page defines, the targets of #fragments."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.ids.add(value or "")


@functools.cache
def anchors_of(url: str) -> frozenset[str] | None:
    """The ids on the page at `url`, or None when it does not load."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None
    parser = Anchors()
    parser.feed(text)
    return frozenset(parser.ids)


# Typesetting is done when MathJax (loaded with `defer`, so perhaps not yet) has resolved its
# startup promise. Pages without math never load MathJax: they answer 'none' once loading is over.
WAIT_FOR_MATH = """
const done = arguments[arguments.length - 1];
const started = Date.now();
(function poll() {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(() => done('typeset'), (e) => done('error: ' + e));
  } else if (document.readyState === 'complete' && !document.querySelector('script[src*="mathjax"]')) {
    done('none');
  } else if (Date.now() - started > 30000) {
    done('error: MathJax did not start within 30 s');
  } else {
    setTimeout(poll, 100);
  }
})();
"""


def site() -> Path:
    """The folder to check, built first unless MAMLBOOK_SITE names one."""
    if SITE == HTML:
        build_book()
    elif not (SITE / "index.html").exists():
        pytest.fail(f"MAMLBOOK_SITE={SITE}: no index.html there; build it first (make site)")
    return SITE


def page_list() -> list[str]:
    return [p.relative_to(SITE).as_posix() for p in pages(site())]


def test_every_page_reads_well_in_a_browser(server, browser):
    failures: list[str] = []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    checked = page_list()
    assert "book/why.html" in checked
    for rel in checked:
        problems = check_page(browser, server, rel)
        failures += [f"{rel}: {p}" for p in problems]
    failures += [f"a request outside {SUB_PATH}/: {path}" for path in sorted(set(OUTSIDE))]
    assert not failures, "\n".join(failures)


def test_the_site_opens_at_its_root(server, browser):
    browser.get(server + "/")
    assert browser.current_url.startswith(server + "/book/intro.html"), browser.current_url
    assert "MAML" in browser.title


def test_search_finds_a_chapter(server, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def links(driver) -> list[str]:
        return driver.execute_script("return [...document.querySelectorAll('#search-results a')].map(a => a.href);")

    def found(driver) -> bool:
        return any(link.split("#")[0].endswith("/book/omniglot.html") for link in links(driver))

    browser.get(f"{server}/search.html?q=Omniglot")
    # Sphinx's search fills the results list page by page: wait for the chapter, not the first result.
    try:
        WebDriverWait(browser, PAGE_TIMEOUT_S).until(found)
    except TimeoutException:
        pytest.fail(f"the Omniglot chapter is not among the search results: {links(browser)}")
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_every_chapter_offers_its_executed_notebook(server, browser):
    chapters = [
        rel
        for rel in page_list()
        if (ROOT / rel).with_suffix(".md").exists()
        and (ROOT / rel).with_suffix(".md").read_text().startswith("---\njupytext:")
    ]
    assert len(chapters) >= 10
    for rel in chapters:
        browser.get(f"{server}/{rel}")
        hrefs = browser.execute_script("return [...document.querySelectorAll('a[href$=\".ipynb\"]')].map(a => a.href);")
        assert hrefs, f"{rel}: no .ipynb download link"
        with urllib.request.urlopen(hrefs[0], timeout=10) as response:
            notebook = json.loads(response.read())
        outputs = sum(len(cell.get("outputs", [])) for cell in notebook["cells"] if cell["cell_type"] == "code")
        assert notebook["nbformat"] == 4 and outputs > 0, f"{rel}: the download has no outputs"


def check_page(driver, server: str, rel: str) -> list[str]:
    problems: list[str] = []
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(f"{server}/{rel}")
    state = driver.execute_async_script(WAIT_FOR_MATH)
    if state.startswith("error"):
        problems.append(f"MathJax failed: {state}")
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.complete ? null : new Promise(r => {"
        "i.onload = i.onerror = r; }))).then(() => done(true));"
    )

    broken = driver.execute_script(
        "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);"
    )
    problems += [f"image did not load: {src}" for src in broken]

    text = driver.execute_script("return document.body.innerText;")
    for raw in ("$$", "\\begin{", "\\frac", "\\nabla"):
        if raw in text:
            at = text.index(raw)
            problems.append(f"untypeset math {raw!r} near: {text[max(0, at - 60) : at + 60]!r}")
    has_math = driver.execute_script("return document.querySelectorAll('.math').length;")
    typeset = driver.execute_script("return document.querySelectorAll('mjx-container').length;")
    if has_math and not typeset:
        problems.append(f"{has_math} math elements but none typeset by MathJax")

    hrefs = driver.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href);")
    for href in sorted(set(hrefs)):
        parsed = urllib.parse.urlsplit(href)
        if not href.startswith(server):
            continue
        target = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, parsed.path, parsed.query, ""))
        ids = anchors_of(target)
        if ids is None:
            problems.append(f"internal link does not resolve: {href}")
        elif parsed.fragment and urllib.parse.unquote(parsed.fragment) not in ids:
            problems.append(f"internal link to a missing anchor: {href}")

    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            problems.append(f"console error: {entry['message']}")

    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);"
    )
    driver.set_window_size(1280, min(max(int(height), 800), 12000))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", rel.removesuffix(".html")) + ".png"
    driver.save_screenshot(str(SCREENSHOTS / name))
    driver.set_window_size(1280, 1600)
    return problems
