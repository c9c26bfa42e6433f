"""The sentence-choosing functions the chapters call (mamlbook.reports.claims), on constructed data,
and the outlook's reinforcement-learning sentence on the stored result and the published table."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

import mamlbook
from mamlbook.reports import PairedComparison, claims, paired_difference
from mamlbook.reports.claims import (
    SeedScore,
    against_published,
    best_cell,
    change_over_steps,
    compare,
    comparison_basis,
    count_of,
    crossing_phrase,
    describe_comparison,
    edges_sentence,
    first_crossing,
    intervals_overlap,
    loss_or_diverged,
    overlap_phrase,
    rl_estimators_reading,
    rl_later_steps,
    rl_one_step,
    rl_one_step_sentence,
    rl_pre_reading,
    seed_difference,
    step_score,
    t95,
    verdict,
)
from mamlbook.reports.published import published
from mamlbook.studies import load_result

RESULTS = Path(mamlbook.__file__).resolve().parents[1] / "book" / "results"


# ----- outlook: comparisons of stored studies without per-task scores -----


def test_t95_matches_students_t():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 30, 100):
        assert t95(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-12)
    assert t95(1) == pytest.approx(12.706, abs=1e-3) and t95(100) < t95(30)
    with pytest.raises(ValueError):
        t95(0)


def test_seed_difference_is_welchs_interval_with_the_smaller_sample_degrees_of_freedom():
    a, b = [0.59, 0.61], [0.86, 0.87, 0.85]
    c = seed_difference(a, b)
    half = 12.7062047 * math.sqrt(0.0002 / 2 + 0.0001 / 3)  # sample variances 2e-4 and 1e-4, df = 2 - 1
    assert c.difference == pytest.approx(0.60 - 0.86)
    assert (c.low, c.high) == (pytest.approx(c.difference - half), pytest.approx(c.difference + half))
    assert (c.n_seeds_a, c.n_seeds_b, c.n_tasks, c.confidence) == (2, 3, 0, 0.95)
    assert c.method.startswith("Welch's t over seeds")
    assert verdict(c) == "worse"
    # Two seeds far apart: the same mean gap is not resolved.
    assert verdict(seed_difference([0.40, 0.80], [0.86, 0.87, 0.85])) == "no difference detected"
    with pytest.raises(ValueError, match="two seeds"):
        seed_difference([0.5], [0.6, 0.7])


def test_compare_pairs_per_task_when_every_seed_has_them():
    a = [SeedScore(0.7, 0.01, [0.6, 0.7, 0.8, 0.7]), SeedScore(0.75, 0.01, [0.7, 0.7, 0.8, 0.8])]
    b = [SeedScore(0.6, 0.01, [0.5, 0.6, 0.7, 0.6]), SeedScore(0.62, 0.01, [0.5, 0.6, 0.7, 0.7])]
    c = compare(a, b)
    expected = paired_difference([s.per_task for s in a], [s.per_task for s in b])
    assert c == expected
    assert "bootstrap" in c.method and c.n_tasks == 4


def test_compare_uses_seeds_then_unpaired_tasks_without_per_task_scores():
    # One seed lacks per-task scores: the seeds are the unit.
    a = [SeedScore(0.86, 0.01, [0.8, 0.9]), SeedScore(0.87, 0.01), SeedScore(0.85, 0.01)]
    b = [SeedScore(0.59, 0.01), SeedScore(0.61, 0.01)]
    assert compare(a, b) == seed_difference([0.86, 0.87, 0.85], [0.59, 0.61])
    # One seed each: the two task intervals combined as independent.
    c = compare([SeedScore(0.49, 0.009)], [SeedScore(0.58, 0.008)])
    assert c.difference == pytest.approx(-0.09)
    assert c.high - c.difference == pytest.approx(math.hypot(0.009, 0.008))
    assert c.method.startswith("unpaired over tasks") and verdict(c) == "worse"
    with pytest.raises(ValueError, match="no interval"):
        compare([SeedScore(0.5, 0.01)], b)
    with pytest.raises(ValueError):
        compare([], b)


def test_describe_comparison_names_the_interval_it_used():
    seeds = seed_difference([0.59, 0.61], [0.86, 0.87, 0.85])
    text = describe_comparison(seeds, name_a="FOMAML", name_b="MAML")
    assert text.startswith("FOMAML is worse than MAML by 26.0% (95% interval over seeds ")
    unpaired = compare([SeedScore(0.50, 0.02)], [SeedScore(0.51, 0.02)])
    assert describe_comparison(unpaired, name_a="A", name_b="B") == (
        "no difference detected between A and B at this budget (95% unpaired interval over tasks -3.8% to 1.8%)"
    )
    paired = paired_difference([[1.0, 1.2, 0.9, 1.1]], [[2.0, 2.1, 2.2, 1.9]])
    text = describe_comparison(paired, name_a="MAML", name_b="FOMAML", unit="", scale=1.0, higher_is_better=False)
    assert text.startswith("MAML is better than FOMAML by 1.0 (95% paired interval ")


def test_comparison_basis_says_when_a_stored_study_predates_per_task_scores():
    seeds = seed_difference([0.59, 0.61], [0.86, 0.87, 0.85])
    text = comparison_basis([seeds, seeds], "better-omniglot")
    assert "predates per-task scores" in text and "not paired per task" in text
    assert "`mamlbook study better-omniglot`" in text
    assert text.count("Welch") == 1  # one method, named once
    paired = paired_difference([[1.0, 1.2, 0.9, 1.1]], [[2.0, 2.1, 2.2, 1.9]])
    text = comparison_basis([paired], "medical")
    assert "paired per test task" in text and "predates" not in text
    with pytest.raises(ValueError):
        comparison_basis([], "medical")


def test_count_of():
    assert count_of(4, 4) == "all 4"
    assert count_of(1, 1) == "the one"
    assert count_of(0, 4) == "none of the 4"
    assert count_of(3, 4) == "3 of 4"
    with pytest.raises(ValueError):
        count_of(5, 4)


def test_best_cell_finds_the_lowest_loss_and_says_if_it_is_on_the_edge():
    x, y = [0.001, 0.01, 0.1], [1, 2, 3]
    inside = [[3.0, 2.0, 3.0], [2.0, 0.5, 2.0], [3.0, 2.0, None]]
    assert best_cell(x, y, inside) == (0.01, 2, 0.5, False)
    edge = [[3.0, 2.0, 3.0], [2.0, 0.5, 2.0], [3.0, 0.4, None]]
    assert best_cell(x, y, edge) == (0.01, 3, 0.4, True)
    ties = [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    assert best_cell(x, y, ties) == (0.001, 1, 1.0, True)  # earlier row, then column
    with pytest.raises(ValueError, match="diverged"):
        best_cell([1], [1], [[None]])
    with pytest.raises(ValueError):
        best_cell(x, y, [[1.0, 2.0]])


def test_edges_sentence():
    assert edges_sentence([True, True]) == "both lie on the edge of their grid"
    assert edges_sentence([False, True]) == "one lies on the edge of its grid"
    assert edges_sentence([False, False]) == "both are inside their grids"
    with pytest.raises(ValueError):
        edges_sentence([True])


def test_change_over_steps():
    assert change_over_steps([0.9, 0.5, 0.41]) == "0.90 to 0.41"
    assert change_over_steps([1.49, 1.61, 3.24, None]) == "1.49 up to 3.24, then diverged"
    assert change_over_steps([1.49, 1.2, None]) == "1.49 to diverged"
    with pytest.raises(ValueError):
        change_over_steps([None, 1.0])


def test_loss_or_diverged():
    assert loss_or_diverged(1583.346) == "1.58e+03"
    assert loss_or_diverged(1.6640, ".2f") == "1.66"
    assert loss_or_diverged(None) == loss_or_diverged(math.inf) == "diverged"


# ----- outlook: the reinforcement-learning sentence -----


def _rl(main: str, means: list[float], ci95: list[float]) -> SimpleNamespace:
    returns = SimpleNamespace(mean=means, ci95=ci95)
    oracle = SimpleNamespace(mean=[-0.5] * len(means), ci95=[0.0] * len(means))
    evaluation = SimpleNamespace(
        steps=list(range(len(means))), goals=[[0.1, 0.2]] * 40, methods={f"MAML ({main})": returns, "oracle": oracle}
    )
    return SimpleNamespace(main=main, evaluation=evaluation)


def test_rl_one_step_reads_the_main_estimator_after_one_step_and_the_papers_maml_return():
    assert rl_one_step(_rl("dice", [-40.0, -20.0, -15.0], [3.0, 2.0, 1.0])) == (-20.0, 2.0, 40, -11.7)
    far = rl_one_step_sentence(_rl("dice", [-40.0, -20.0], [3.0, 2.0]))
    assert far == (
        "the stored run's mean return after one policy-gradient step was -20.0 (95% interval over its 40 test "
        "goals ± 2.0), against -11.7 in the paper, outside that interval"
    )
    assert rl_one_step_sentence(_rl("surrogate", [-40.0, -12.5], [3.0, 2.0])).endswith("inside that interval")


def test_rl_sentence_on_the_stored_run_quotes_its_return_and_the_papers_not_the_oracle():
    """The published page once printed no return and took the oracle (-2.3) as the paper's one-step return."""
    result = load_result(RESULTS / "rl-nav2d.json")
    ours, _, goals, paper = rl_one_step(result)
    assert round(ours, 1) == -13.6
    assert paper == published("finn2017.nav2d.maml.step1").value == -11.7
    assert paper != published("finn2017.nav2d.oracle").value
    assert goals == len(result.evaluation.goals)
    text = rl_one_step_sentence(result)
    assert "was -13.6 " in text and "against -11.7 in the paper" in text


# ----- rl: the 2D navigation results against the paper and the baselines -----


def test_against_published_says_covered_only_when_our_interval_covers_the_papers_value():
    assert against_published(-13.6, 2.3, -11.7) == "is consistent with the paper's value (our 95% interval covers it)"
    assert against_published(-10.4, 2.3, -3.2) == (
        "falls short of the paper's value (our 95% interval ends 4.9 below it)"
    )
    assert against_published(-2.0, 0.5, -3.2).startswith("lies above the paper's value")
    assert against_published(-3.0, 0.2, -3.2).startswith("is consistent")  # the edge counts as covered


def test_step_score_pairs_per_goal_when_the_file_has_per_goal_returns():
    old = SimpleNamespace(mean=[-40.0, -13.0], ci95=[4.0, 2.0], per_goal=None)
    assert step_score(old, 1) == SeedScore(-13.0, 2.0, None)
    new = SimpleNamespace(mean=[-40.0, -13.0], ci95=[4.0, 2.0], per_goal=[[-41.0, -39.0], [-14.0, -12.0]])
    assert step_score(new, 1).per_task == [-14.0, -12.0]
    # Without per-goal returns the two intervals are combined as independent: hypot of the half-widths.
    c = compare([step_score(old, 1)], [SeedScore(-18.0, 3.0, None)])
    assert (c.difference, c.high - c.difference) == pytest.approx((5.0, math.hypot(2.0, 3.0)))
    assert c.method.startswith("unpaired over tasks")


def _versus(difference: float, half: float) -> PairedComparison:
    return PairedComparison(difference, difference - half, difference + half, 0.95, 1, 1, 0, "unpaired over tasks")


def test_rl_later_steps_says_the_order_turns_only_when_both_intervals_exclude_zero():
    turned = rl_later_steps(_versus(5.0, 4.5), _versus(-6.4, 2.4), 3)
    assert turned.startswith("With more steps the order turns: after 3 steps, MAML is worse than the pretrained")
    assert "trained for what one step does" in turned
    behind = rl_later_steps(_versus(5.0, 6.0), _versus(-6.4, 2.4), 3)  # no lead after one step to turn
    assert behind.startswith("After 3 steps, MAML is worse") and "order turns" not in behind
    assert rl_later_steps(_versus(5.0, 4.5), _versus(1.0, 2.0), 3).startswith(
        "After 3 steps, no difference detected between MAML and the pretrained policy"
    )
    assert rl_later_steps(_versus(5.0, 4.5), _versus(3.0, 2.0), 3).startswith("After 3 steps, MAML is better")


def test_intervals_overlap_and_its_phrase():
    assert intervals_overlap([(0.0, 1.0), (1.5, 1.0), (0.9, 0.2)])
    assert not intervals_overlap([(0.0, 1.0), (2.5, 1.0)])
    assert overlap_phrase([(0.0, 1.0), (1.5, 1.0), (0.9, 0.2)]) == "all three intervals overlap"
    assert overlap_phrase([(0.0, 1.0), (1.5, 1.0)]) == "the two intervals overlap"
    assert overlap_phrase([(0.0, 1.0), (2.5, 1.0), (0.5, 0.5)]) == "the intervals do not all overlap"
    with pytest.raises(ValueError):
        intervals_overlap([])


def test_first_crossing_and_its_phrase():
    assert first_crossing([-30.0, -25.0, -20.0, -15.0], -20.0) == 3
    assert first_crossing([-30.0, -25.0], -20.0) is None
    assert crossing_phrase("lvc", 3, 55) == "lvc at iteration 3"
    assert crossing_phrase("dice", None, 55) == "dice not within 55 iterations"


def test_rl_estimators_reading_picks_the_sentence_by_the_late_intervals():
    level = {"surrogate": (-13.8, 1.0), "dice": (-14.0, 1.0), "lvc": (-13.3, 0.7)}
    reading, take = rl_estimators_reading(level, se_ratio=3.2, horizon=100)
    assert reading.startswith("At this size, with one seed per estimator, the three cannot be told apart")
    assert take == "at this budget the three estimators learn about equally fast"
    dice_last = {"surrogate": (-13.8, 1.0), "dice": (-33.6, 3.8), "lvc": (-13.3, 0.7)}
    reading, take = rl_estimators_reading(dice_last, se_ratio=3.2, horizon=100)
    assert "with surrogate and lvc level" in reading and "standard error 3.2 times" in reading
    assert "up to 100 steps" in reading and take.startswith("DiCE, unbiased on the bandit, learns slowest")
    dice_last_apart = {"surrogate": (-20.0, 1.0), "dice": (-33.6, 3.8), "lvc": (-13.3, 0.7)}
    assert "with lvc fastest" in rl_estimators_reading(dice_last_apart, se_ratio=3.2, horizon=100)[0]
    lvc_last = {"surrogate": (-13.8, 1.0), "dice": (-20.0, 1.0), "lvc": (-33.3, 0.7)}
    reading, take = rl_estimators_reading(lvc_last, se_ratio=3.2, horizon=100)
    assert reading.startswith("Late in training surrogate is ahead and lvc behind, with intervals apart")
    assert take == "at this budget surrogate ends ahead of lvc on training returns, on one seed each"


def test_rl_pre_reading_compares_the_lowest_pre_step_return_with_the_untrained_policys():
    below = rl_pre_reading({"surrogate": -38.8, "dice": -70.0, "lvc": -38.8}, -68.4)
    assert below.startswith("Before the step, dice's training return (-70.0 over the same iterations) ends up below")
    above = rl_pre_reading({"surrogate": -38.8, "dice": -64.8, "lvc": -38.8}, -68.4)
    assert above.startswith("Before the step, the training returns average surrogate -38.8; dice -64.8; lvc -38.8")
    assert "That dice's is the lowest is no failure" in above


def test_rl_chapter_sentences_on_the_stored_result():
    """The stored study keeps each goal's return: its comparisons are paired per goal, and the basis says so."""
    result = load_result(RESULTS / "rl-nav2d.json")
    methods, steps = result.evaluation.methods, result.evaluation.steps
    maml, pre = methods[f"MAML ({result.main})"], methods["pretrained"]
    one, last = steps.index(1), len(steps) - 1
    first = compare([step_score(maml, one)], [step_score(pre, one)])
    later = compare([step_score(maml, last)], [step_score(pre, last)])
    assert comparison_basis([first, later], "rl").startswith("The comparisons of the rl study are paired per test task")
    assert first.n_tasks == later.n_tasks == len(result.evaluation.goals)
    assert verdict(first) == "better" and verdict(later) == "worse"
    paper = published("finn2017.nav2d.maml.step1").value
    assert against_published(maml.mean[one], maml.ci95[one], paper).startswith("is consistent")


# ----- medical.md, better.md and the better-omniglot appendix: methods against a reference -----


def _c(difference: float, low: float, high: float, method: str = "Welch's t over seeds (95%)") -> PairedComparison:
    """A comparison with a given interval (a − b), as `compare` would return it."""
    return PairedComparison(difference, low, high, 0.95, 3, 3, 0, method)


AHEAD, BEHIND, LEVEL = _c(0.05, 0.01, 0.09), _c(-0.05, -0.09, -0.01), _c(0.01, -0.02, 0.04)


def test_envelope_difference_spans_every_seeds_interval_and_decides_only_when_they_are_apart():
    a = [claims.SeedScore(0.80, 0.01), claims.SeedScore(0.90, 0.01), claims.SeedScore(0.85, 0.01)]
    c = claims.envelope_difference(a, [claims.SeedScore(0.70, 0.02)])
    assert c.difference == pytest.approx(0.85 - 0.70)
    assert (c.low, c.high) == (pytest.approx(0.79 - 0.72), pytest.approx(0.91 - 0.68))
    assert (c.n_seeds_a, c.n_seeds_b, c.n_tasks) == (3, 1, 0)
    assert claims.verdict(c) == "better"
    # One seed of b inside a's spread: the envelopes overlap, nothing is claimed.
    assert claims.verdict(claims.envelope_difference(a, [claims.SeedScore(0.84, 0.02)])) == "no difference detected"
    text = claims.describe_comparison(c, name_a="MAML", name_b="X", unit=" points")
    assert text.startswith("MAML is better than X by 15.0 points (95% envelope of the seeds' intervals 7.0 points")
    with pytest.raises(ValueError):
        claims.envelope_difference([], a)


def test_compare_or_envelope_takes_the_envelope_only_for_one_seed_against_several_without_per_task_scores():
    three = [claims.SeedScore(0.80, 0.01), claims.SeedScore(0.82, 0.01), claims.SeedScore(0.81, 0.01)]
    one = [claims.SeedScore(0.70, 0.01)]
    assert claims.compare_or_envelope(three, one) == claims.envelope_difference(three, one)
    assert claims.compare_or_envelope(one, three) == claims.envelope_difference(one, three)
    assert claims.compare_or_envelope(three, three[:2]) == claims.compare(three, three[:2])  # Welch over seeds
    assert claims.compare_or_envelope(one, one) == claims.compare(one, one)  # unpaired over tasks
    paired_a = [claims.SeedScore(0.8, 0.01, [0.7, 0.8, 0.9]), claims.SeedScore(0.8, 0.01, [0.8, 0.8, 0.8])]
    paired_b = [claims.SeedScore(0.6, 0.01, [0.5, 0.6, 0.7])]
    assert claims.compare_or_envelope(paired_a, paired_b).method.startswith("hierarchical bootstrap")


def test_and_list_and_by_verdict():
    assert claims.and_list([]) == "none"
    assert claims.and_list([], empty="no other method") == "no other method"
    assert claims.and_list(["A"]) == "A"
    assert claims.and_list(["A", "B", "C"]) == "A, B and C"
    groups = claims.by_verdict({"x": AHEAD, "y": BEHIND, "z": LEVEL, "w": AHEAD})
    assert groups == {"better": ["x", "w"], "worse": ["y"], "no difference detected": ["z"]}
    # For a loss a negative difference is the better one.
    assert claims.by_verdict({"x": AHEAD}, higher_is_better=False)["worse"] == ["x"]










def test_standing_names_only_decided_directions_for_a_loss():
    # Each comparison is method − MAML in MSE: positive is worse than MAML.
    text = claims.standing("MAML", {"FOMAML": AHEAD, "Meta-SGD": LEVEL, "ANIL": AHEAD}, higher_is_better=False)
    assert text == (
        "no method is better than MAML; MAML is better than FOMAML and ANIL; "
        "no difference is detected between MAML and Meta-SGD"
    )
    text = claims.standing("MAML", {"Meta-SGD": BEHIND}, higher_is_better=False, diverged=["Reptile"])
    assert text == "Meta-SGD is better than MAML; Reptile diverged on some seed, which leaves no interval to compare"


def test_top_sentence():
    assert claims.top_sentence("MAML++", {"MAML": LEVEL, "ANIL": AHEAD, "Meta-SGD": LEVEL}) == (
        "The highest mean, MAML++'s, cannot be ranked above MAML and Meta-SGD: no difference is detected"
    )
    assert "above every other method's" in claims.top_sentence("MAML++", {"ANIL": AHEAD})


def test_pieces_sentence_counts_a_piece_only_where_its_interval_excludes_zero():
    effects = {"CA": _c(0.020, 0.006, 0.035), "DA": _c(0.009, -0.006, 0.024), "LSLR": _c(-0.03, -0.05, -0.01)}
    assert claims.pieces_sentence(effects, "MAML++") == (
        "switching CA off made MAML++ better by 2.0 points (95% interval over seeds 0.6 points to 3.5 points); "
        "switching LSLR off made MAML++ worse by 3.0 points (95% interval over seeds -5.0 points to -1.0 points); "
        "for DA no difference is detected"
    )
    assert claims.pieces_sentence(effects, "MAML++", intervals=False) == (
        "switching CA off made MAML++ better; switching LSLR off made MAML++ worse; for DA no difference is detected"
    )
    # A loss: a piece whose removal raises the MSE made the whole worse.
    loss = {"LSLR": _c(0.5, 0.1, 0.9), "CA": _c(-0.5, -1.0, 0.1)}
    assert claims.pieces_sentence(loss, "MAML++", higher_is_better=False, intervals=False) == (
        "switching LSLR off made MAML++ worse; for CA no difference is detected"
    )
    assert claims.pieces_sentence({"MSL": LEVEL}, "MAML++") == "no difference is detected for any piece (MSL)"
    assert claims.pieces_sentence({"MSL": LEVEL}, "MAML++", diverged=["DA"]) == (
        "no difference is detected for any piece (MSL); "
        "without DA MAML++ diverged on some seed, which leaves no interval"
    )
    with pytest.raises(ValueError):
        claims.pieces_sentence({}, "MAML++")


def test_lead_status_needs_the_margin_and_an_interval_above_zero():
    assert claims.lead_status(_c(0.026, 0.012, 0.040), 0.01) == "meets"
    assert claims.lead_status(_c(0.005, 0.001, 0.009), 0.01) == "does not meet"  # decided, too small
    assert claims.lead_status(_c(0.02, -0.01, 0.05), 0.01) == "does not meet"  # large, undecided


def test_fresh_seeds_reading():
    assert claims.fresh_seeds_reading(_c(0.02, 0.01, 0.03), [1.0, 3.0]).startswith("a lead that holds on seeds")
    assert claims.fresh_seeds_reading(_c(0.024, -0.125, 0.174), [1.2, 3.7]) == (
        "positive on each fresh seed, but no difference is detected over seeds "
        "(95% interval over seeds -12.5 points to 17.4 points)"
    )
    assert claims.fresh_seeds_reading(LEVEL, [1.0, -0.5]).startswith("not positive on every fresh seed")
    assert claims.fresh_seeds_reading(BEHIND, [-1.0, -2.0]).startswith("reversed on fresh seeds")


def test_spread_and_ratio_words():
    assert claims.spread_word(0.5) == "less than"
    assert claims.spread_word(0.8) == "about as much as"
    assert claims.spread_word(1.6) == "more than"
    assert claims.times_less_or_more(4.9) == "4.9 times less"
    assert claims.times_less_or_more(0.5) == "2.0 times more"


def test_below_reference_for_paired_errors():
    assert claims.below_reference(_c(-3.0, -5.0, -1.0), "MAML") == "below MAML's, and the paired interval excludes zero"
    assert claims.below_reference(_c(-0.3, -3.8, 2.3), "MAML") == "below MAML's, but the paired interval includes zero"
    assert claims.below_reference(_c(10.2, 5.7, 15.5), "MAML") == "above MAML's, and the paired interval excludes zero"
    assert claims.below_reference(_c(1.0, -2.0, 4.0), "MAML") == "not below MAML's"


def test_ablation_reading_holds_the_helpful_piece_against_the_reference_and_flags_the_pick():
    effects = {"CA": _c(0.020, 0.006, 0.035), "DA": LEVEL, "LSLR": _c(-0.03, -0.05, -0.01)}
    deltas = {"CA": [2.1, 1.7, 2.3], "DA": [0.5, -0.2, 1.0], "LSLR": [-3.0, -2.5, -3.5]}
    versus = {"CA": _c(0.026, 0.012, 0.040), "DA": LEVEL, "LSLR": BEHIND}
    text = claims.ablation_reading(effects, deltas, versus)
    assert text.startswith("Switching CA off raised MAML++'s accuracy on every seed (seed by seed +2.1, +1.7, +2.3")
    assert "MAML++ without CA is better than MAML by 2.6 points" in text and "which meets the one-point" in text
    assert "singled out after looking at the whole ablation" in text
    assert text.endswith(
        "Switching LSLR off cost 3.0 points (95% interval over seeds -5.0 points to -1.0 points): it earns its place."
    )
    assert claims.ablation_reading({"DA": LEVEL}, deltas, versus) == "At this budget no piece's effect is detected."


def test_the_better_study_reads_typed_and_compares_over_seeds_until_it_has_per_task_scores():
    from mamlbook.studies import better

    result = load_result(RESULTS / "better.json")
    methods = better.summary(result, "methods")
    assert list(methods)[:2] == ["MAML", "FOMAML"] and methods["MAML"].n == 3
    runs = better.seed_runs(result, "MAML")
    assert methods["MAML"].mean == pytest.approx(sum(r.test_loss for r in runs) / len(runs))
    iterations, curves = better.curves(result, "MAML")
    assert curves.shape == (3, len(iterations))
    scores = [claims.SeedScore(r.test_loss, r.test_ci95, r.per_task) for r in runs]
    fomaml = [claims.SeedScore(r.test_loss, r.test_ci95, r.per_task) for r in better.seed_runs(result, "FOMAML")]
    c = claims.compare(fomaml, scores)
    paired = all(r.per_task is not None for r in result.runs if r.group == "methods")
    assert c.method.startswith("hierarchical bootstrap" if paired else "Welch's t over seeds")
    with pytest.raises(ValueError, match="no methods runs"):
        better.seed_runs(result, "Nothing")


def test_better_omniglot_curves_read_typed_runs_like_dicts():
    from mamlbook.records import to_data
    from mamlbook.studies.better_omniglot import stability, val_spread

    runs = load_result(RESULTS / "better-omniglot.json").runs
    assert val_spread(runs, "MAML") == val_spread([to_data(r) for r in runs], "MAML")
    assert stability(runs, "MAML++") == stability([to_data(r) for r in runs], "MAML++")


def test_position_against_says_a_side_only_when_the_interval_is_on_it():
    from mamlbook.reports.claims import position_against

    assert position_against(14.4, 22.1, 19.4) == "not distinguishable from"
    assert position_against(10.0, 15.0, 19.4) == "below"
    assert position_against(20.0, 25.0, 19.4) == "above"
    with pytest.raises(ValueError):
        position_against(3.0, 2.0, 1.0)


def test_claim_status_holds_only_when_the_interval_is_on_the_claimed_side():
    from mamlbook.reports.claims import claim_status

    lower = PairedComparison(-0.03, -0.05, -0.01, 0.95, 1, 1, 600, "test")
    assert claim_status(lower, -1) == "holds" and claim_status(lower, +1) == "does not hold"
    unclear = PairedComparison(0.01, -0.01, 0.03, 0.95, 1, 1, 600, "test")
    assert claim_status(unclear, -1) == "is not decided"
    with pytest.raises(ValueError):
        claim_status(lower, 0)


# ----- faster.md, reduced precision: an error against the noise between meta-batches -----


def test_a_precision_error_is_inside_the_noise_only_below_half_the_spread():
    from mamlbook.reports.claims import error_against_noise, inside_noise

    assert inside_noise(0.1, 0.5) and inside_noise(0.25, 0.5) and not inside_noise(0.3, 0.5)
    inside, outside = error_against_noise({"MAML, 1 step": (0.17, 0.9), "MAML, 5 steps": (0.99, 1.1), "x": (0.0, 1.0)})
    assert inside == ["MAML, 1 step", "x"] and outside == ["MAML, 5 steps"]
    with pytest.raises(ValueError, match="positive"):
        inside_noise(0.1, 0.0)
    with pytest.raises(ValueError, match="not negative"):
        inside_noise(-0.1, 1.0)


def test_training_in_reduced_precision_is_read_from_the_paired_interval():
    from mamlbook.reports.claims import training_reading

    tie = training_reading(_c(-0.001, -0.016, 0.016))
    assert tie == "training in it ended where float32 did, within the paired interval (-1.6 points to +1.6 points)"
    worse = training_reading(_c(-0.03, -0.05, -0.01))
    assert worse.startswith("training in it ended 3.0 points below float32")
    assert training_reading(_c(0.02, 0.01, 0.03)).startswith("training in it ended 2.0 points above float32")
