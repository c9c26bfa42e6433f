"""Render mamlbook's docstrings in the API reference as they are written.

The package's docstrings are plain text with Markdown code spans (`params_of`, `[B, K, ...]`), not
reStructuredText, while autodoc parses them as reStructuredText. This hook rewrites each docstring
before it is parsed: a code span becomes an inline literal, and the characters that are markup in
reStructuredText but plain text in the docstrings (`*`, `|`, `\\`, a trailing `_`) are escaped.
Doctest blocks (`>>>` up to the next blank line) are left exactly as they are.

A dataclass's signature shows each `default_factory` as a call (`{}` for `dict`): autodoc writes
`<factory>`, which is not Python and leaves the whole signature unparsed, its types unlinked.

A type variable in a signature (`Callable[[], T]`) is a reference to nothing that can be documented;
it is shown as plain text rather than failing the nitpicky build. Only names that import as a
`typing.TypeVar` are treated so.

Nothing is hidden: a docstring still fails the `-W -n` build on anything this does not rewrite,
and so does a type hint that names an undocumented mamlbook object.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any, ParamSpec, TypeVar

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

SPAN = re.compile(r"`([^`\n]+)`")
TRAILING_UNDERSCORE = re.compile(r"(?<=\w)_(?=\W|$)")


def _escape(text: str) -> str:
    text = text.replace("\\", "\\\\")
    for char in "*|`":
        text = text.replace(char, "\\" + char)
    return TRAILING_UNDERSCORE.sub(r"\\_", text)


def _line(line: str) -> str:
    out, last = [], 0
    for match in SPAN.finditer(line):
        before, code = line[last : match.start()], match.group(1).strip()
        out.append(_escape(before))
        # Inline markup must be separated from words: "`nn.Module`s" needs "\ " (an empty separator).
        out.append(("\\ " if before[-1:].isalnum() else "") + f"``{code}``")
        after = line[match.end() : match.end() + 1]
        out.append("\\ " if after.isalnum() else "")
        last = match.end()
    out.append(_escape(line[last:]))
    return "".join(out)


def markdown_spans_to_rst(lines: list[str]) -> list[str]:
    result, doctest = [], False
    for line in lines:
        doctest = (doctest or line.lstrip().startswith(">>>")) and bool(line.strip())
        result.append(line if doctest else _line(line))
    return result


def _process(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if name.startswith("mamlbook"):
        lines[:] = markdown_spans_to_rst(lines)


def _factory(factory: Any) -> str:
    return {dict: "{}", list: "[]", tuple: "()"}.get(factory, f"{getattr(factory, '__qualname__', 'factory')}()")


def _signature(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None, annotation: str | None
) -> tuple[str | None, str | None] | None:
    if what != "class" or not signature or "<factory>" not in signature or not dataclasses.is_dataclass(obj):
        return None
    for field in dataclasses.fields(obj):
        if field.init and field.default_factory is not dataclasses.MISSING:
            signature = signature.replace("<factory>", _factory(field.default_factory), 1)
    return signature, annotation


def _imported(target: str) -> Any:
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _type_variable(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element) -> Any:
    target = node.get("reftarget", "")
    if node.get("refdomain") == "py" and target.startswith("mamlbook."):
        if isinstance(_imported(target), TypeVar | ParamSpec):
            return contnode
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", _type_variable)
    app.connect("autodoc-process-docstring", _process)
    app.connect("autodoc-process-signature", _signature)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
