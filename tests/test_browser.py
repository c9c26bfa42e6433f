"""Open every page of the built book in headless Chromium and check what a reader would see.

For each page: no console errors, every image loaded, the math typeset by MathJax (no raw TeX left
in the text), every internal link (and its #anchor) resolves. A PNG of each page is saved under
_build/screenshots/. Skips where Chromium or chromedriver is absent; CI installs both.
"""

from __future__ import annotations

import functools
import http.server
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


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def server():
    build_book()
    with serve_folder(HTML, QuietHandler) as url:
        yield url


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


def page_list() -> list[str]:
    build_book()
    return [p.relative_to(HTML).as_posix() for p in pages()]


def test_every_page_reads_well_in_a_browser(server, browser):
    failures: list[str] = []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    checked = page_list()
    assert "book/why.html" in checked
    for rel in checked:
        problems = check_page(browser, server, rel)
        failures += [f"{rel}: {p}" for p in problems]
    assert not failures, "\n".join(failures)


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
