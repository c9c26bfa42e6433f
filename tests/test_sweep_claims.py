"""What book/questions.md says about the stored sweep: if book/results/sweep.json changes, this tells."""

from pathlib import Path

from mamlbook.reports.claims import best_setting
from mamlbook.studies import load_result
from mamlbook.studies.records import SweepGrid

SWEEP = Path(__file__).resolve().parents[1] / "book" / "results" / "sweep.json"


def best_per_row(grid: SweepGrid) -> list[tuple[float, bool]]:
    """Each row's best column value (lowest loss, diverged cells as infinity) and whether it is on the edge."""
    return [best_setting(grid.x_values, row) for row in grid.loss_or_inf()]


def test_the_best_inner_learning_rate_is_the_same_at_every_step_count_and_inside_the_grid() -> None:
    inner = load_result(SWEEP).grids["inner"]
    assert inner.x == "inner_lr" and inner.y == "inner_steps"
    rows = best_per_row(inner)
    assert len(rows) == len(inner.y_values) > 1
    assert {alpha for alpha, _ in rows} == {0.01}
    assert not any(on_edge for _, on_edge in rows)
    assert min(inner.x_values) < 0.01 < max(inner.x_values)


def test_every_meta_batch_does_best_at_the_largest_meta_learning_rate_of_the_grid() -> None:
    outer = load_result(SWEEP).grids["outer"]
    assert outer.x == "meta_lr" and outer.y == "meta_batch"
    rows = best_per_row(outer)
    assert len(rows) == len(outer.y_values) > 1
    assert {beta for beta, _ in rows} == {0.01} == {max(outer.x_values)}
    assert all(on_edge for _, on_edge in rows)
