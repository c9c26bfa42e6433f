"""Every number the book quotes from published work, each with its citation and its place in the source.

The chapters compare their own runs with the papers' numbers; keeping those numbers in one table,
each with where it was read, stops a chapter from quoting a value from memory, quoting a different
value than another chapter, or taking the wrong entry of a nested dict (the outlook chapter once
read the 2D navigation oracle, -2.3, as MAML's one-step return, -11.7). `tests/test_published.py`
checks every entry and fails on a result typed as a literal in a chapter's code cell.

`kind` says what an entry is: a `"result"` (what a method scored), an `"interval"` (the +/- printed
beside a result: small numbers that coincide with learning rates, so the chapter scan skips them)
or a `"setting"` (the size of the paper's experiment: iterations, tasks, horizon).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

__all__ = ["KINDS", "OMNIGLOT_SETTINGS", "PUBLISHED", "Published", "published", "quote", "series"]

KINDS = ("result", "interval", "setting")


@dataclass(frozen=True)
class Published:
    """One quoted number: its value and unit, what it measures, the bibtex key, and where it is printed."""

    value: float
    unit: str
    what: str
    cite: str
    where: str
    note: str = ""
    kind: str = "result"
    decimals: int | None = None  # places as printed, where the float cannot tell: 96.0 is "96.0%", not "96%"


# The authors' released files, named where a number is not printed in the paper itself.
_MAML_RL = "github.com/cbfinn/maml_rl (commit 9c8e2eb), icml/icml_point_results_{}.pkl, key task_avg_returns"
_NAV2D_WHERE = (
    "Figure 4 (top, 'point robot, 2d navigation'), drawn on a symmetric log scale without printed values; "
    "the number is the mean over the 40 test tasks of the authors' released results, " + _MAML_RL
)
_NAV2D_NOTE = "released-file mean {:.2f}, rounded to one decimal; the figure cannot be read to this precision"
_MAML_TF = "github.com/cbfinn/maml (the authors' released code), main.py"
_RENAMED = {"pretrained": "; the plotting script make_point_plots.py reads it as maml0.pkl, stored as sens0.pkl"}
_NAV2D_RETURNS = {  # method key -> (label, released file, mean return after 0..3 steps, unrounded means)
    "maml": ("MAML", "maml", (-40.4, -11.7, -3.3, -3.2), (-40.41, -11.68, -3.33, -3.23)),
    "pretrained": (
        "pretrained (one policy trained on all goals)",
        "sens0",
        (-40.8, -19.7, -11.7, -8.5),
        (-40.81, -19.73, -11.72, -8.47),
    ),
    "random": ("random initialization", "random", (-82.7, -58.0, -53.8, -46.8), (-82.66, -57.96, -53.84, -46.81)),
}


def _nav2d() -> dict[str, Published]:
    """The 2D navigation returns, one entry per method and number of policy-gradient steps."""
    table = {}
    for key, (label, released, returns, exact) in _NAV2D_RETURNS.items():
        for step, (value, mean) in enumerate(zip(returns, exact, strict=True)):
            table[f"finn2017.nav2d.{key}.step{step}"] = Published(
                value,
                "return",
                f"2D navigation, {label}: mean return after {step} policy-gradient steps",
                "finn2017maml",
                _NAV2D_WHERE.format(released),
                _NAV2D_NOTE.format(mean) + _RENAMED.get(key, ""),
            )
    return table


# The Omniglot few-shot tables: the (ways, shots) settings in the papers' column order, and per paper
# the key prefix, method key, label, bibtex key, where the row is printed, a note, and each setting's
# accuracy with the 95% interval printed beside it (None where the table prints none).
OMNIGLOT_SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))
_OMNIGLOT = (
    (
        "finn2017",
        "maml",
        "MAML with Conv4",
        "finn2017maml",
        "Table 1 (Omniglot, top), row 'MAML (ours)', column '{ways}-way Accuracy, {shots}-shot'",
        "",
        {(5, 1): (98.7, 0.4), (5, 5): (99.9, 0.1), (20, 1): (95.8, 0.3), (20, 5): (98.9, 0.2)},
    ),
    (
        "finn2017",
        "fomaml",
        "first-order MAML with Conv4 (the second derivatives dropped)",
        "finn2017maml",
        "Table 1 (Omniglot, top), row 'MAML, first order approx.', column '{ways}-way Accuracy, {shots}-shot'",
        "read from two public copies of the table that agree; Nichol et al. (2018) reprint the row, with MAML's, "
        "in their Omniglot table as first-order MAML + Transduction",
        {(5, 1): (98.3, 0.5), (5, 5): (99.2, 0.2), (20, 1): (89.4, 0.5), (20, 5): (97.9, 0.1)},
    ),
    (
        "snell2017",
        "protonets",
        "Prototypical Networks (Euclidean distance, Conv4 embedding, not fine-tuned)",
        "snell2017prototypical",
        "Table 1, row 'Prototypical Networks (ours)' (Dist. Euclid., Fine Tune N), "
        "column '{ways}-way Acc., {shots}-shot'",
        "no interval printed; the mean over 1000 random test episodes (section 3.1)",
        {(5, 1): (98.8, None), (5, 5): (99.7, None), (20, 1): (96.0, None), (20, 5): (98.9, None)},
    ),
)


def _omniglot_results() -> dict[str, Published]:
    """One entry per paper, method and (ways, shots), e.g. `snell2017.omniglot.20w5s.protonets`, with its interval."""
    table = {}
    for paper, method, label, cite, where, note, cells in _OMNIGLOT:
        for (ways, shots), (accuracy, ci95) in cells.items():
            key = f"{paper}.omniglot.{ways}w{shots}s.{method}"
            place = where.format(ways=ways, shots=shots)
            what = f"Omniglot {ways}-way {shots}-shot accuracy, {label}"
            table[key] = Published(accuracy, "%", what, cite, place, note, decimals=1)
            if ci95 is not None:
                table[f"{key}_ci95"] = Published(
                    ci95, "%", f"95% interval of {key}", cite, place, kind="interval", decimals=1
                )
    return table


PUBLISHED: dict[str, Published] = {
    **_nav2d(),
    "finn2017.nav2d.oracle": Published(
        -2.3,
        "return",
        "2D navigation, oracle: a policy given the goal as input (not an upper bound)",
        "finn2017maml",
        _NAV2D_WHERE.format("oracle"),
        "released-file mean -2.29 over the same 40 tasks; one number, drawn as a flat line at every step",
    ),
    "finn2017.nav2d.meta_batch": Published(
        20, "tasks", "2D navigation: tasks per meta-batch", "finn2017maml", "appendix A.2", kind="setting"
    ),
    "finn2017.nav2d.trajectories": Published(
        20,
        "trajectories",
        "2D navigation: trajectories per task and policy-gradient step",
        "finn2017maml",
        "section 5.3 (20 rollouts per gradient step)",
        "the released maml_trpo_point.py has fast_batch_size = 20",
        kind="setting",
    ),
    "finn2017.nav2d.horizon": Published(
        100,
        "steps",
        "2D navigation: episode horizon",
        "finn2017maml",
        "section 5.3 (2D navigation, H = 100)",
        kind="setting",
    ),
    "finn2017.nav2d.iterations": Published(
        500,
        "meta-iterations",
        "2D navigation: meta-training length (the best iteration is evaluated)",
        "finn2017maml",
        "appendix A.2 (up to 500 meta-iterations)",
        kind="setting",
    ),
    "finn2017.nav2d.alpha": Published(
        0.1,
        "step size",
        "reinforcement learning: the inner policy-gradient step size alpha the paper's text gives",
        "finn2017maml",
        "appendix A.2 (one gradient step with alpha = 0.1)",
        kind="setting",
    ),
    "finn2017.nav2d.alpha_released": Published(
        0.5,
        "step size",
        "2D navigation: the inner step size of the authors' released meta-training script",
        "finn2017maml",
        "github.com/cbfinn/maml_rl (commit 725c800), maml_examples/maml_trpo_point.py, fast_learning_rates",
        kind="setting",
    ),
    "finn2017.nav2d.alpha_released_test": Published(
        0.5,
        "step size",
        "2D navigation: the first meta-test step size of the authors' released test script",
        "finn2017maml",
        "github.com/cbfinn/maml_rl (commit 725c800), maml_examples/test_maml_point.py, step_sizes",
        kind="setting",
    ),
    "finn2017.nav2d.alpha_released_test_later": Published(
        0.25,
        "step size",
        "2D navigation: the later meta-test step size of the authors' released test script",
        "finn2017maml",
        "github.com/cbfinn/maml_rl (commit 725c800), maml_examples/test_maml_point.py, 0.5 * step_sizes",
        kind="setting",
    ),
    "finn2017.cheetah.meta_batch": Published(
        40, "tasks", "locomotion (HalfCheetah): tasks per meta-batch", "finn2017maml", "appendix A.2", kind="setting"
    ),
    "finn2017.cheetah.trajectories": Published(
        20,
        "trajectories",
        "locomotion (HalfCheetah): trajectories per task and policy-gradient step",
        "finn2017maml",
        "section 5.3 (20 rollouts per gradient step; 40 for ant forward/backward only)",
        kind="setting",
    ),
    "finn2017.cheetah.horizon": Published(
        200,
        "steps",
        "locomotion (HalfCheetah): episode horizon",
        "finn2017maml",
        "section 5.3 (H = 200)",
        kind="setting",
    ),
    "finn2017.cheetah.iterations": Published(
        500,
        "meta-iterations",
        "locomotion (HalfCheetah): meta-training length",
        "finn2017maml",
        "appendix A.2 (up to 500 meta-iterations)",
        kind="setting",
    ),
    **_omniglot_results(),
    "finn2017.omniglot.train_characters": Published(
        1200,
        "characters",
        "Omniglot: meta-training characters (each also rotated by 90, 180, 270 degrees)",
        "finn2017maml",
        "section 5.2 (1200 characters for training, the remaining 423 for testing)",
        kind="setting",
    ),
    "finn2017.omniglot.iterations": Published(
        60_000,
        "meta-iterations",
        "Omniglot: meta-training length",
        "finn2017maml",
        "appendix A.1 (all models trained for 60000 iterations)",
        "the usage lines of the released main.py train Omniglot for 40000",
        kind="setting",
    ),
    "finn2017.omniglot.5way.meta_batch": Published(
        32, "tasks", "Omniglot 5-way: tasks per meta-batch", "finn2017maml", "appendix A.1", kind="setting"
    ),
    "snell2017.omniglot.train_characters": Published(
        1200,
        "characters",
        "Omniglot: training characters (each also rotated by 90, 180, 270 degrees: 4,800 classes)",
        "snell2017prototypical",
        "section 3.1 (1200 characters plus rotations for training, the remaining classes for test)",
        kind="setting",
    ),
    "snell2017.omniglot.train_way": Published(
        60,
        "classes",
        "Omniglot: classes per training episode, for both the 1-shot and 5-shot models",
        "snell2017prototypical",
        "section 3.1 (training episodes containing 60 classes and 5 query points per class)",
        kind="setting",
    ),
    "snell2017.omniglot.test_episodes": Published(
        1000,
        "episodes",
        "Omniglot: random test episodes behind each accuracy of Table 1",
        "snell2017prototypical",
        "section 3.1 (averaged over 1000 randomly generated episodes from the test set)",
        kind="setting",
    ),
    "finn2017.sinusoid.alpha": Published(
        0.01, "step size", "sinusoid regression: inner step size alpha", "finn2017maml", "section 5.1", kind="setting"
    ),
    "finn2017.sinusoid.meta_batch": Published(
        25,
        "tasks",
        "sinusoid regression: tasks per meta-batch",
        "finn2017maml",
        _MAML_TF + ", flag meta_batch_size (default 25, kept by the 10-shot sinusoid command)",
        kind="setting",
    ),
    "finn2017.sinusoid.iterations": Published(
        70_000,
        "meta-iterations",
        "sinusoid regression: meta-training length",
        "finn2017maml",
        _MAML_TF + ", usage lines (10-shot sinusoid: --metatrain_iterations=70000)",
        kind="setting",
    ),
    "finn2017.sinusoid.test_tasks": Published(
        600,
        "tasks",
        "meta-test tasks behind each mean and 95% interval",
        "finn2017maml",
        _MAML_TF + ", NUM_TEST_POINTS = 600 in test()",
        kind="setting",
    ),
    "lake2015.runs.people": Published(
        4.5,
        "%",
        "Lake's 20 one-shot runs (20-way, within alphabet): people's mean error",
        "lake2015human",
        "main text, one-shot classification results, and Fig. 6A",
    ),
    "lake2015.runs.bpl": Published(
        3.3,
        "%",
        "Lake's 20 one-shot runs: Bayesian Program Learning's mean error",
        "lake2015human",
        "main text, one-shot classification results, and Fig. 6A",
    ),
    "lake2015.runs.mhd": Published(
        38.8,
        "%",
        "Lake's 20 one-shot runs: nearest neighbour under the Modified Hausdorff Distance, mean error",
        "lake2015human",
        "github.com/brendenlake/omniglot (the authors' released code), python/one-shot-classification/"
        "demo_classification.py: 'Running this demo should lead to a result of 38.8 percent errors.'",
        "the distance is Dubuisson and Jain's (dubuisson1994mhd); the 20 per-run errors average 38.75",
    ),
}


def published(key: str) -> Published:
    """The entry named `key`; a typo fails with the nearest keys, so a chapter never quotes a guess."""
    try:
        return PUBLISHED[key]
    except KeyError:
        close = difflib.get_close_matches(key, PUBLISHED, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; keys start with {_prefixes()}"
        raise KeyError(f"no published number {key!r}{hint}") from None


def series(prefix: str) -> list[Published]:
    """The entries under `prefix` in table order, e.g. `series("finn2017.nav2d.maml")`: returns by step."""
    found = [entry for key, entry in PUBLISHED.items() if key.startswith(prefix + ".")]
    if not found:
        raise KeyError(f"no published numbers under {prefix!r}; keys start with {_prefixes()}")
    return found


def quote(key: str, interval: bool = True) -> str:
    """The value as the source prints it ("98.7 ± 0.4%", "60,000"), with its interval where the table has one."""
    entry = published(key)
    text = f"{entry.value:,.{_decimals(entry)}f}"
    ci = PUBLISHED.get(f"{key}_ci95")
    if interval and ci is not None:
        text += f" ± {ci.value:.{_decimals(ci)}f}"
    return text + ("%" if entry.unit == "%" else "")


def _decimals(entry: Published) -> int:
    """Decimal places of the entry as written in the table: 98.7 -> 1, 60_000 -> 0, 96.0 (decimals=1) -> 1."""
    if entry.decimals is not None:
        return entry.decimals
    text = repr(float(entry.value))
    return 0 if text.endswith(".0") else len(text.split(".")[1])


def _prefixes() -> str:
    """The first two parts of every key, for error messages."""
    return ", ".join(sorted({".".join(key.split(".")[:2]) for key in PUBLISHED}))
