"""Claims the chapters make in words, checked on the package's own tasks and meta-gradients."""

import re
from pathlib import Path

import torch
from torch import Tensor

import mamlbook
from mamlbook.bench.frameworks import IMPLEMENTATIONS
from mamlbook.reports.published import published
from mamlbook.studies import load_result
from mamlbook.train.algorithms import MAMLPP_PIECES

BOOK = Path(__file__).resolve().parents[1] / "book"
WORDS = {5: "five", 6: "six", 7: "seven", 8: "eight"}


def hinge(scores: Tensor, labels: Tensor) -> Tensor:
    """The mean hinge loss of a linear SVM in the primal, for labels in {0, 1}."""
    return torch.clamp(1 - (2 * labels - 1) * scores, min=0).mean()


def test_one_small_step_closes_two_alpha_mean_x_squared_of_the_slope_gap():
    """concepts.md, exercise 2.1: with alpha = 0.1 one step closes about 0.07 of the slope gap."""
    alpha = 0.1
    model = mamlbook.LinearModel().double()
    tasks = mamlbook.Lines(k_shot=5).sample(500, torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    closed = []
    for i in range(len(tasks)):
        slope, intercept = tasks.info["slope"][i].double(), tasks.info["intercept"][i].double()
        start = {"linear.weight": (slope + 1).view(1, 1), "linear.bias": intercept.view(1)}  # slope gap 1
        after = mamlbook.adapt(model, start, tasks.support_x[i], tasks.support_y[i], "mse", 1, alpha, order=0)
        left = (after["linear.weight"].squeeze() - slope).item()
        x_squared = tasks.support_x[i].pow(2).mean().item()
        assert abs(left - (1 - 2 * alpha * x_squared)) < 1e-6  # per task, for its own support (float32 targets)
        closed.append(1 - left)
    mean_closed = sum(closed) / len(closed)
    assert abs(mean_closed - 2 * alpha / 3) < 0.005  # E[x^2] = 1/3 for x ~ U[-1, 1]
    assert round(mean_closed, 2) == 0.07


def test_maml_and_first_order_maml_coincide_for_a_hinge_loss_linear_model():
    """questions.md: the hinge's second derivative is zero almost everywhere, so MAML is first-order MAML."""
    torch.manual_seed(0)
    model = mamlbook.LinearModel(in_features=2).double()
    params = mamlbook.params_of(model)
    batch = mamlbook.HalfPlanes(k_shot=10).sample(8, torch.Generator().manual_seed(1)).to(dtype=torch.float64)
    for steps in (1, 3):
        _, second = mamlbook.meta_gradient(model, params, batch, hinge, steps, 0.5, order=2)
        _, first = mamlbook.meta_gradient(model, params, batch, hinge, steps, 0.5, order=1)
        assert any(g.abs().max() > 1e-3 for g in second.values())
        for name in second:
            torch.testing.assert_close(second[name], first[name], rtol=0, atol=1e-12)
    # With a squared loss the Hessian is not zero, and the two differ: the check can tell.
    _, second = mamlbook.meta_gradient(model, params, batch, "mse", 1, 0.5, order=2)
    _, first = mamlbook.meta_gradient(model, params, batch, "mse", 1, 0.5, order=1)
    assert max((second[k] - first[k]).abs().max().item() for k in second) > 1e-3


def test_the_chapters_count_what_they_list() -> None:
    """better.md's MAML++ fixes are the ablation's pieces; tools.md's ways are the frameworks benchmarked."""
    fixes = WORDS[len(MAMLPP_PIECES)]
    assert f"## MAML++: {fixes} fixes, each a switch" in (BOOK / "better.md").read_text()
    ways = WORDS[len({name.partition(":")[0] for name in IMPLEMENTATIONS})]
    tools = (BOOK / "tools.md").read_text()
    assert f"meta-gradient written {ways} ways" in tools
    assert f"## {ways.capitalize()} ways to write it" in tools


def _seconds(text: str) -> tuple[str, float]:
    """The first duration in `text` ("about 25 s", "under 10 s", "7 minutes"): its qualifier and seconds."""
    numbers = {"a": 1, "one": 1, "two": 2, "three": 3}
    found = re.search(r"(about|under)?\s*(\d+|a|one|two|three)\s+(s|minutes?)\b", text)
    assert found, f"no duration in {text!r}"
    value = float(numbers.get(found[2], found[2]))
    return found[1] or "about", value * (60 if found[3].startswith("minute") else 1)


def test_chapter_headers_agree_with_the_intro_table_of_full_size_times() -> None:
    """Each chapter's "Runs in" header matches the measured full-size time in intro.md's table."""
    rows = re.findall(r"^\| \[\]\(([\w/-]+\.md)\) \| [^|]+ \| ([^|]+) \|$", (BOOK / "intro.md").read_text(), re.M)
    assert len(rows) >= 10
    for chapter, measured in rows:
        header = (BOOK / chapter).read_text().split("**Runs in:**", 1)[1]
        qualifier, claimed = _seconds(" ".join(header.split()))
        table = _seconds(measured)[1]
        if qualifier == "under":
            assert table <= claimed, f"{chapter}: header says under {claimed:g} s, intro {table:g} s"
        else:
            close = abs(table - claimed) <= max(5.0, 0.25 * claimed)
            assert close, f"{chapter}: header says about {claimed:g} s, intro {table:g} s"


def test_the_rl_study_takes_the_step_size_of_the_papers_text() -> None:
    """rl.md: the stored study meta-trains and meta-tests with the paper's alpha, not the released scripts'."""
    result = load_result(BOOK / "results" / "rl-nav2d.json")
    alpha = published("finn2017.nav2d.alpha").value
    assert {s.inner_lr for s in result.settings.values() if s.inner_steps} == {alpha}
    assert result.evaluation.inner_lr == alpha != published("finn2017.nav2d.alpha_released").value


# Words about how the book was produced, which a reader cannot use: a book speaks of its subject, its
# data and its hardware. Timing noise has one home, book/appendix/measurements.md.
PRODUCTION = re.compile(
    r"\bsessions?\b|build machine|\blent\b|workplace|the issue\b|issue's|shared machine|machines? shared with|"
    r"other (?:training )?jobs?\b|\bjobs on \d+ cores|shared with \d|rank nothing|how busy|builds? this book|"
    r"machines? that builds?|(?:available|offline) here",
    re.IGNORECASE,
)


def test_no_page_speaks_of_how_the_book_was_made():
    root = BOOK.parent
    # What users read: pages, README, the result files the chapters print from, and the package and
    # scripts (docstrings, help texts and strings written into result files).
    pages = [*BOOK.glob("*.md"), *BOOK.glob("appendix/*.md"), root / "README.md", root / "CONTRIBUTING.md"]
    pages += [*BOOK.glob("results/**/*.json"), *root.glob("mamlbook/**/*.py"), *root.glob("scripts/*")]
    hits = [
        f"{page.relative_to(root)}:{number}: {line.strip()}"
        for page in pages
        for number, line in enumerate(page.read_text().splitlines(), 1)
        if PRODUCTION.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_the_production_word_check_catches_what_it_is_for():
    for sentence in ("the issue's target was 1.5x", "measured on a machine shared with other jobs",
                     "the machines that build this book", "a build machine", "how busy the shared machine was",
                     "2 CPU cores shared with 3 other jobs", "2 to 4 jobs on 2 cores",
                     "the machines that build the book have no internet", "the one available offline here"):
        assert PRODUCTION.search(sentence), sentence
    assert not PRODUCTION.search("the meta-gradient of a batch of tasks, timed on one core")
