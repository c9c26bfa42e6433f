"""HTML fixes that let every page load cleanly offline, with no console error.

1. MathJax 3 is served from the book itself, so pages typeset math without reaching a CDN.
2. Inline scripts that extensions add twice are emitted once (see `_dedupe_scripts`).
3. A `/favicon.ico` exists: the top-level redirect page has no icon link, so browsers ask for it.
4. Every chapter page offers its executed notebook (`.ipynb`, outputs included) in the download
   menu. sphinx-book-theme does that only as part of its launch buttons, which need a repository
   URL and fail without one; here the launch buttons are dropped until `repository.url` is set,
   and the notebook is offered either way.

On MathJax:

Sphinx loads MathJax from jsDelivr by default. Readers offline, CI machines and the browser test
have no internet, so the book ships its own copy: the npm package `mathjax@3.2.2`, fetched once with
`npm pack` into `.cache/mathjax/` (checked against a pinned sha256), of which only the files the
`tex-mml-chtml` component loads are copied into the HTML's `_static/mathjax/`.

`MAMLBOOK_MATHJAX_TGZ` may point at an already downloaded `mathjax-3.2.2.tgz` (no npm needed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError

VERSION = "3.2.2"
SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"
ENTRY = "tex-mml-chtml.js"
# What the entry point loads lazily: fonts (output/chtml), TeX extensions autoloaded by commands
# such as \color or \cancel (input/tex), and the context menu with its accessibility helpers.
KEEP = (ENTRY, "input/", "output/chtml", "output/chtml.js", "ui/", "a11y/", "adaptors/")


def _tarball(cache: Path) -> Path:
    given = os.environ.get("MAMLBOOK_MATHJAX_TGZ")
    if given:
        return Path(given)
    path = cache / f"mathjax-{VERSION}.tgz"
    if path.exists():
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise ExtensionError(
            f"MathJax {VERSION} is not in {cache} and npm is not installed to fetch it; install npm "
            "or set MAMLBOOK_MATHJAX_TGZ to a downloaded mathjax-3.2.2.tgz"
        )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run([npm, "pack", f"mathjax@{VERSION}", "--pack-destination", tmp, "--silent"], check=True)
        os.replace(Path(tmp) / path.name, path)
    return path


def _static_copy(root: Path) -> Path:
    """A folder holding `mathjax/` (the trimmed es5 build); created on first use."""
    cache = root / ".cache" / "mathjax"
    static = cache / f"static-{VERSION}"
    if (static / "mathjax" / ENTRY).exists():
        return static
    tgz = _tarball(cache)
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    if digest != SHA256:
        raise ExtensionError(f"{tgz} has sha256 {digest}, expected {SHA256}; delete it to fetch it again")
    partial = cache / f"static-{VERSION}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    prefix = "package/es5/"
    with tarfile.open(tgz) as archive:
        members = [
            m for m in archive.getmembers()
            if m.isfile() and m.name.startswith(prefix) and m.name[len(prefix):].startswith(KEEP)
        ]
        for member in members:
            member.name = "mathjax/" + member.name[len(prefix):]
        archive.extractall(partial, members=members, filter="data")
    shutil.rmtree(static, ignore_errors=True)
    os.replace(partial, static)
    return static


def _configure(app: Sphinx, config: Config) -> None:
    static = _static_copy(Path(app.confdir))
    config.html_static_path = [*config.html_static_path, str(static)]
    config.mathjax_path = f"mathjax/{ENTRY}"


def _dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Drop repeated script entries from a page.

    With Sphinx 7.4, scripts that sphinx-thebe and sphinx-togglebutton add in `env-before-read-docs`
    are registered both with the application and with the already created builder, so each page
    carried `const THEBE_JS_URL = ...` twice, and the second copy is a SyntaxError in the console.
    """
    if "script_files" not in context:
        return
    seen: set[tuple[str, str]] = set()
    unique = []
    for script in context["script_files"]:
        # The copies differ only in filename None against "": both mean an inline script.
        filename = getattr(script, "filename", script) or ""
        key = (str(filename), repr(getattr(script, "attributes", None)))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    # In place: the list is the builder's own, to which later handlers (MathJax's) still append.
    context["script_files"][:] = unique


def _write_favicon_ico(app: Sphinx, exception: Exception | None) -> None:
    """A 32x32 icon in the book's colour at the site root, drawn here rather than stored as a binary."""
    if exception is not None or app.builder.format != "html":
        return
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(image).rounded_rectangle((0, 0, 31, 31), radius=6, fill=(31, 95, 139, 255))
    image.save(Path(app.outdir) / "favicon.ico", format="ICO", sizes=[(32, 32)])
    # The top-level redirect (sphinx-external-toc writes a bare one only where none exists) names
    # its icon: without a link the browser asks for /favicon.ico at the host's root, which on a
    # project site (https://<owner>.github.io/<repo>/) is not the book's.
    target = f"{app.config.root_doc}.html"
    (Path(app.outdir) / "index.html").write_text(
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">\n<title>{app.config.project}</title>\n'
        f'<link rel="icon" href="favicon.ico">\n<meta http-equiv="Refresh" content="0; url={target}" />\n'
        f'</head><body><a href="{target}">{app.config.project}</a></body></html>\n',
        encoding="utf8",
    )


def _launch_buttons_need_a_repository(app: Sphinx, config: Config) -> None:
    """Drop the launch buttons (Binder, Colab) while no repository URL is configured."""
    options = config.html_theme_options
    if not options.get("repository_url"):
        options.pop("launch_buttons", None)


def _executed_notebook(app: Sphinx, pagename: str) -> Path | None:
    """myst-nb's copy of the page as a notebook, with its outputs, or None for a plain page.

    With `execute_notebooks: cache`, myst-nb 1.4 writes `jupyter_execute/<page>.ipynb` without the
    outputs it took from the cache (it renders them, but saves the notebook it read); they are
    merged back here from the same cache record, so the download is the executed notebook.
    """
    path = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not path.exists():
        return None
    config = app.env.mystnb_config
    if config.execution_mode == "cache":
        import nbformat
        from jupyter_cache import get_cache

        notebook = nbformat.read(path, nbformat.NO_CONVERT)
        if not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"):
            try:
                _, merged = get_cache(config.execution_cache_path).merge_match_into_notebook(notebook)
            except KeyError:  # not in the cache: nothing to merge
                return path
            nbformat.write(merged, path)
    return path


def _offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Copy the page's executed notebook next to its source, for the theme's download menu."""
    if not str(context.get("sourcename", "")).endswith((".md", ".md.txt")):
        return
    executed = _executed_notebook(app, pagename)
    if executed is None:  # a Markdown page that is not a notebook
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _launch_buttons_need_a_repository)
    # Before the theme's header buttons (priority 501), which read `ipynb_source`.
    app.connect("html-page-context", _offer_notebook, priority=450)
    app.connect("build-finished", _write_favicon_ico)
    app.connect("config-inited", _configure)
    # Early (priority 100): handlers of this event stop at the first that returns a template name.
    app.connect("html-page-context", _dedupe_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
