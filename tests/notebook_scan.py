"""Scan executed notebooks for text that says a value was not found instead of showing it.

A chapter must read its numbers from typed results and fail loudly when one is missing; a cell that
prints "(not stored)" or "holds no ... that this chapter recognizes" publishes a page with a hole in
it and no failing test. This finds such text in any cell output (streams, results, glued values).

    python tests/notebook_scan.py _build/html      # every executed notebook under a built site
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

# What a fallback says: a value not found, not recognized, not stored or not measured; a file missing.
FALLBACK = re.compile(
    r"not (?:been )?(?:found|recogni[sz]ed?|stored|measured|run yet)|is missing|no stored|n/a \(|"
    r"holds no\b|could not (?:find|read)",
    re.IGNORECASE,
)


def output_texts(notebook: dict) -> Iterator[tuple[int, str]]:
    """(code cell number, text) for every textual output of every code cell."""
    number = 0
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        number += 1
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                yield number, "".join(output.get("text", ""))
            elif output.get("output_type") == "error":
                yield number, f"{output.get('ename')}: {output.get('evalue')}"
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") or mime.endswith("json"):
                    yield number, "".join(value) if isinstance(value, list) else str(value)


def fallback_sentences(notebook: dict) -> list[str]:
    """Each output line that reads as a fallback, prefixed by its code cell's number."""
    found = []
    for number, text in output_texts(notebook):
        for line in text.splitlines():
            if FALLBACK.search(line):
                found.append(f"cell {number}: {line.strip()[:200]}")
    return found


def scan(paths: list[Path]) -> dict[str, list[str]]:
    """Fallback lines per notebook, for every `.ipynb` under the given files or folders."""
    notebooks = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*.ipynb")))]
    report = {}
    for path in notebooks:
        if ".ipynb_checkpoints" in path.parts or ".jupyter_cache" in path.parts:
            continue
        lines = fallback_sentences(json.loads(path.read_text()))
        if lines:
            report[str(path)] = lines
    return report


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [Path("_build/html")]
    count = sum(1 for path in paths for _ in ([path] if path.is_file() else path.rglob("*.ipynb")))
    report = scan(paths)
    for name, lines in report.items():
        print(name)
        for line in lines:
            print("   ", line)
    print(f"{count} notebooks scanned, {len(report)} with fallback text")
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
