"""The table of published numbers: every entry sourced, and no chapter typing a paper's result by hand.

A result copied into a code cell drifts from its source and from the other chapters that quote it;
the scan below finds any numeric literal in a chapter's code that equals a published result and
names the table key the chapter should take it from.
"""

from __future__ import annotations

import io
import keyword
import math
import re
import tokenize
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest
from _chapters import ROOT, chapter_docnames

from mamlbook.reports import lake
from mamlbook.reports.published import KINDS, OMNIGLOT_SETTINGS, PUBLISHED, Published, published, quote, series

BIB = ROOT / "book" / "references.bib"
CELL_START = "```{code-cell}"
SMALL_INT = 10  # integer literals up to this size are counts and indices, never worth a match
# Keyword arguments that place and size a plot: their numbers (figsize=(12, 3.3)) are never a paper's.
LAYOUT = {
    "alpha",
    "bbox_to_anchor",
    "capsize",
    "dpi",
    "fontsize",
    "height",
    "hspace",
    "labelsize",
    "linewidth",
    "lw",
    "markersize",
    "ms",
    "ncol",
    "pad",
    "rect",
    "rotation",
    "s",
    "size",
    "width",
    "wspace",
    "figsize",
    "xytext",
}


@dataclass(frozen=True)
class Hit:
    """A literal in a code cell that equals a published result: where it is and which keys it matches."""

    line: int
    literal: str
    keys: tuple[str, ...]


def bib_keys() -> set[str]:
    """The citation keys of book/references.bib."""
    return set(re.findall(r"^@\w+\{([^,\s]+),", BIB.read_text(), flags=re.MULTILINE))


def code_cells(text: str) -> list[tuple[int, str]]:
    """Each code cell of a MyST chapter as (file line of its first code line, source), options dropped."""
    cells, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if not lines[i].startswith(CELL_START):
            i += 1
            continue
        i += 1
        if i < len(lines) and lines[i].strip() == "---":  # options as a YAML block
            i += 1
            while i < len(lines) and lines[i].strip() != "---":
                i += 1
            i += 1
        while i < len(lines) and lines[i].startswith(":"):  # options as `:key: value` lines
            i += 1
        start, body = i, []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append("" if lines[i].lstrip().startswith(("%", "!")) else lines[i])  # IPython magics
            i += 1
        cells.append((start + 1, "\n".join(body) + "\n"))
    return cells


def _decimals(literal: str) -> int:
    """Decimal places a numeric literal is written to: "98.7" -> 1, "1e-3" -> 3, "60_000" -> 0."""
    return max(0, -int(Decimal(literal.replace("_", "")).as_tuple().exponent))


def _matches(entry: Published, literal: float, decimals: int, is_int: bool) -> bool:
    """Whether `literal` is the entry's value written to the literal's precision (an integer only matches an
    integer, and a value printed with decimals, such as 96.0, only a literal written with them)."""
    value = entry.value
    if float(value).is_integer() and not entry.decimals:
        return literal == value
    if is_int or decimals == 0:
        return False
    return math.isclose(round(value, decimals), literal, abs_tol=10 ** -(decimals + 3))


def _starts_operand(token: tokenize.TokenInfo) -> bool:
    """Whether a "-" after `token` is a sign (`[-40.4`, `return -2.3`) rather than a subtraction (`x - 11.7`)."""
    if token.type == tokenize.NAME:
        return keyword.iskeyword(token.string) and token.string not in ("True", "False", "None")
    return token.type not in (tokenize.NUMBER, tokenize.STRING) and token.string not in ")]}"


def _layout_tokens(tokens: list[tokenize.TokenInfo]) -> set[int]:
    """Indices of the tokens inside a layout keyword argument (`figsize=(12, 3.3)`), which the scan skips."""
    skip, depth, inside = set(), 0, None  # `inside`: bracket depth of the layout argument being read
    for i, token in enumerate(tokens):
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
            inside = None if inside is not None and depth < inside else inside
        elif token.string == "," and depth == inside:
            inside = None
        if inside is not None:
            skip.add(i)
        elif token.string in LAYOUT and depth > 0 and i + 1 < len(tokens) and tokens[i + 1].string == "=":
            inside = depth
    return skip


def scan(text: str, table: dict[str, Published] = PUBLISHED) -> list[Hit]:
    """Every numeric literal in the code cells of chapter `text` that equals a published result."""
    results = {key: entry for key, entry in table.items() if entry.kind == "result"}
    hits = []
    for first_line, source in code_cells(text):
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.NL]
        layout = _layout_tokens(tokens)
        for i, token in enumerate(tokens):
            if token.type != tokenize.NUMBER or token.string[-1] in "jJ" or i in layout:
                continue
            try:
                decimals = _decimals(token.string)
            except InvalidOperation:  # hex, octal or binary: not how a paper's number is written
                continue
            number = float(Decimal(token.string.replace("_", "")))
            is_int = decimals == 0 and not any(c in token.string for c in ".eE")
            unary = i > 0 and tokens[i - 1].string == "-" and (i == 1 or _starts_operand(tokens[i - 2]))
            if unary:
                number = -number
            if is_int and abs(number) <= SMALL_INT:
                continue
            keys = tuple(k for k, e in results.items() if _matches(e, number, decimals, is_int))
            if keys:
                literal = ("-" if unary else "") + token.string
                hits.append(Hit(first_line + token.start[0] - 1, literal, keys))
    return hits


def test_every_entry_is_sourced() -> None:
    keys = bib_keys()
    for key, entry in PUBLISHED.items():
        assert entry.cite in keys, f"{key}: cite {entry.cite!r} is not a key of {BIB.name}"
        assert entry.where.strip(), f"{key}: say where in {entry.cite} the number is printed"
        assert entry.what.strip() and entry.unit.strip(), f"{key}: say what the number measures and its unit"
        assert math.isfinite(entry.value), f"{key}: {entry.value} is not a finite number"
        assert entry.kind in KINDS, f"{key}: kind {entry.kind!r} is not one of {KINDS}"
        assert re.fullmatch(r"[a-z]+\d{4}(\.[a-z0-9_]+)+", key), f"{key}: keys are author+year.dotted.lowercase"
        if entry.kind == "interval":
            assert key.endswith("_ci95") and PUBLISHED[key.removesuffix("_ci95")].kind == "result", key


def test_lookups_name_close_keys() -> None:
    with pytest.raises(KeyError, match="finn2017.nav2d.maml.step1"):
        published("finn2017.nav2d.maml.step_1")
    with pytest.raises(KeyError, match="no published numbers under"):
        series("finn2017.nav2d.nothing")
    assert quote("finn2017.omniglot.5w1s.maml") == "98.7 ± 0.4%"
    assert quote("finn2017.omniglot.5w1s.maml", interval=False) == "98.7%"
    assert quote("finn2017.omniglot.iterations") == "60,000"


@pytest.mark.parametrize(
    ("paper", "method", "intervals"),
    [("finn2017", "maml", True), ("finn2017", "fomaml", True), ("snell2017", "protonets", False)],
)
def test_each_omniglot_table_has_every_setting(paper: str, method: str, intervals: bool) -> None:
    """Both papers' Table 1 print 5- and 20-way, 1- and 5-shot; Finn et al. print a 95% interval beside each row."""
    assert OMNIGLOT_SETTINGS == ((5, 1), (5, 5), (20, 1), (20, 5))
    for ways, shots in OMNIGLOT_SETTINGS:
        key = f"{paper}.omniglot.{ways}w{shots}s.{method}"
        entry = published(key)
        assert entry.kind == "result" and entry.unit == "%" and 85 < entry.value < 100, key
        assert entry.where.startswith("Table 1") and f"{ways}-way Acc" in entry.where and f"{shots}-shot" in entry.where
        assert (f"{key}_ci95" in PUBLISHED) == intervals, key
    assert quote("snell2017.omniglot.20w1s.protonets") == "96.0%"  # printed with its decimal, as in the paper
    assert quote("finn2017.omniglot.20w5s.maml") == "98.9 ± 0.2%"


def test_first_order_maml_is_below_maml_in_every_omniglot_setting() -> None:
    """Table 1 of Finn et al.: dropping the second derivatives costs accuracy in each column (a mixed-up row fails)."""
    for ways, shots in OMNIGLOT_SETTINGS:
        setting = f"finn2017.omniglot.{ways}w{shots}s"
        assert published(f"{setting}.fomaml").value < published(f"{setting}.maml").value, setting
    assert quote("finn2017.omniglot.20w1s.fomaml") == "89.4 ± 0.5%"


def test_nav2d_oracle_is_not_part_of_the_maml_series() -> None:
    """The outlook chapter once took the oracle (-2.3), the first scalar under `paper`, as MAML's one-step return."""
    maml = [entry.value for entry in series("finn2017.nav2d.maml")]
    assert maml == [-40.4, -11.7, -3.3, -3.2]
    assert published("finn2017.nav2d.maml.step1").value == maml[1] != published("finn2017.nav2d.oracle").value
    for method in ("maml", "pretrained", "random"):
        assert len(series(f"finn2017.nav2d.{method}")) == 4, "returns after 0, 1, 2 and 3 steps"


def test_package_copies_agree_with_the_table() -> None:
    """A constant elsewhere in the package that still holds a paper number must hold the table's."""
    if hasattr(lake, "PUBLISHED_MHD_ERROR"):
        assert lake.PUBLISHED_MHD_ERROR == published("lake2015.runs.mhd").value


@pytest.mark.parametrize("docname", chapter_docnames())
def test_no_chapter_types_a_published_result(docname: str) -> None:
    path = ROOT / f"{docname}.md"
    hits = scan(path.read_text())
    assert not hits, "take these from mamlbook.reports.published (published(key).value), not literals:\n" + "\n".join(
        f"{path.relative_to(ROOT)}:{hit.line}: {hit.literal} is {' or '.join(hit.keys)}" for hit in hits
    )


def test_the_scan_catches_a_literal_paper_number(tmp_path: Path) -> None:
    chapter = tmp_path / "fake.md"
    chapter.write_text(
        "---\njupytext: {}\n---\n"
        "# A fake chapter\n\n"
        "The paper reports 98.7% in prose, which is the glue's job, not the scan's.\n\n"
        "```{code-cell} ipython3\n"
        ":tags: [hide-input]\n"
        "PAPER = {'MAML': [-40.4, -11.7], 'random init': [- 82.7]}\n"
        "accuracy, interval, query_points = 98.70, 0.4, 100\n"
        "gap = mine - 11.7  # a subtraction: the literal is +11.7, no published result\n"
        "fig = plt.figure(figsize=(4.5, 3.3))  # layout, although 4.5 and 3.3 are Lake's error rates\n"
        "bpl = 3.3\n"
        "```\n"
    )
    hits = scan(chapter.read_text())
    assert [(hit.line, hit.literal) for hit in hits] == [
        (10, "-40.4"),
        (10, "-11.7"),
        (10, "-82.7"),
        (11, "98.70"),
        (14, "3.3"),
    ]
    assert hits[1].keys == ("finn2017.nav2d.maml.step1", "finn2017.nav2d.pretrained.step2")
    assert hits[3].keys == ("finn2017.omniglot.5w1s.maml",)


def test_the_scan_reads_a_whole_number_printed_with_a_decimal_as_printed() -> None:
    """ProtoNets' 20-way 1-shot is "96.0%": the literal 96.0 is the paper's number, a count of 96 is not."""
    chapter = "```{code-cell} ipython3\nprotonets, batch = 96.0, 96\n```\n"
    assert [(hit.literal, hit.keys) for hit in scan(chapter)] == [("96.0", ("snell2017.omniglot.20w1s.protonets",))]
