"""Incremental builds that stay correct: jupyter-cache, invalidated when the package changes.

With `execute_notebooks: cache`, myst-nb re-executes a chapter only when its code cells change
(jupyter-cache hashes them), and Sphinx re-reads only the pages whose source changed. Neither knows
that the chapters import the `mamlbook` package and read `book/results/`: after an edit there, both
would serve stale outputs. This extension hashes those inputs (`book_cache_inputs` in the config,
paths relative to the book's root) together with the smoke switch; when the hash differs from the
one stored beside the cache, it empties the cache and marks every page for re-reading. So:

- an unchanged rebuild executes nothing and writes almost nothing;
- a prose-only edit of one chapter re-reads that page and executes nothing (a cache hit);
- an edit of one chapter's code re-executes that chapter alone;
- an edit of the package or of the stored results re-executes every chapter;
- a chapter whose execution failed is executed again on the next build, even if unchanged (Sphinx
  would otherwise keep the failed page: its source did not change).

Beside the key it keeps a manifest (each input file's hash), so that a full re-execution says in the
build log which files caused it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
KEY_FILE = "mamlbook-inputs.sha256"
MANIFEST_FILE = "mamlbook-inputs.json"
SKIP = {"__pycache__", ".ipynb_checkpoints"}


def input_files(root: Path, inputs: list[str]) -> dict[str, str]:
    """{path relative to root: sha256 of its bytes} for every file under `inputs` (caches left out)."""
    manifest = {}
    for name in sorted(inputs):
        base = root / name
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if SKIP & set(path.relative_to(root).parts) or path.suffix == ".pyc":
                continue
            manifest[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return manifest


def inputs_hash(manifest: dict[str, str], smoke: bool) -> str:
    """sha256 over the smoke switch and the manifest's paths and file hashes, in `input_files`' order."""
    digest = hashlib.sha256(f"smoke={smoke}\n".encode())
    for name, file_hash in manifest.items():
        digest.update(name.encode() + b"\0" + bytes.fromhex(file_hash))
    return digest.hexdigest()


def describe_change(old: dict, new: dict, limit: int = 5) -> str:
    """Which inputs differ between two manifests, in words (at most `limit` paths named)."""
    if old.get("smoke") != new.get("smoke"):
        return f"the smoke switch changed ({old.get('smoke')} -> {new.get('smoke')})"
    before, after = old.get("files", {}), new.get("files", {})
    changed = sorted(p for p in before.keys() & after.keys() if before[p] != after[p])
    parts = [
        (label, paths)
        for label, paths in (
            ("changed", changed),
            ("added", sorted(after.keys() - before.keys())),
            ("removed", sorted(before.keys() - after.keys())),
        )
        if paths
    ]
    if not parts:
        return "the inputs' hashes were computed differently (an older key format)"
    words = []
    for label, paths in parts:
        named = ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
        words.append(f"{label}: {named}")
    return "; ".join(words)


def _check_inputs(app: Sphinx) -> None:
    app.env.mamlbook_inputs_changed = False
    config = app.env.mystnb_config
    if config.execution_mode != "cache":
        return
    from mamlbook.config import smoke

    cache = Path(config.execution_cache_path)
    files = input_files(Path(app.confdir), list(app.config.book_cache_inputs))
    manifest = {"smoke": smoke(), "files": files}
    key = inputs_hash(files, manifest["smoke"])
    stored, stored_manifest = cache / KEY_FILE, cache / MANIFEST_FILE
    if stored.exists() and stored.read_text().strip() == key:
        return
    if cache.exists():
        try:
            reason = describe_change(json.loads(stored_manifest.read_text()), manifest)
        except (OSError, ValueError):
            reason = "no record of the previous inputs"
        LOGGER.info(f"book_cache: inputs changed ({reason}); re-executing every chapter")
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    stored.write_text(key + "\n")
    stored_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    app.env.mamlbook_inputs_changed = True


def _outdated(app: Sphinx, env: BuildEnvironment, added: set, changed: set, removed: set) -> list[str]:
    """Every page after the inputs changed (their outputs came from the old code); pages whose
    execution failed last time, always (a fixed data folder or a transient error deserves a retry)."""
    from myst_nb.sphinx_ import NbMetadataCollector

    if getattr(env, "mamlbook_inputs_changed", False):
        return sorted(env.found_docs - added - changed)
    failed = []
    for docname in env.found_docs - added - changed:
        data = NbMetadataCollector.get_exec_data(env, docname)
        if data is not None and not data.get("succeeded", True):
            failed.append(docname)
    return sorted(failed)


def setup(app: Sphinx) -> dict:
    app.add_config_value("book_cache_inputs", [], "env", [list])
    # After myst-nb's own builder-inited handler (priority 500), which resolves the cache's path.
    app.connect("builder-inited", _check_inputs, priority=900)
    app.connect("env-get-outdated", _outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
