"""The studies' process pool (`studies.pool.run_in_processes`): order, deadline, failures kept apart."""

from __future__ import annotations

import pytest
import torch

from mamlbook.studies.pool import run_in_processes


def square_with_threads(x: int) -> tuple[int, int]:
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x * x, torch.get_num_threads()


def test_jobs_run_in_processes_and_a_failure_is_kept_apart():
    results, errors, announced = {}, {}, []
    todo = [(n, (square_with_threads, x)) for n, x in enumerate([2, -1, 3])]
    run_in_processes(todo, 2, float("inf"), results, errors, lambda k, s: announced.append(k), threads=1,
                     progress=False)  # fmt: skip
    assert results == {0: (4, 1), 2: (9, 1)}  # each worker on the thread count asked for
    assert errors == {1: "ValueError: negative input -1"}
    assert sorted(announced) == [0, 1, 2]


def test_no_job_starts_after_the_deadline():
    results, errors = {}, {}
    clock = iter([0.0, 5.0, 20.0, 20.0, 20.0])  # the second job is checked after the deadline (10)
    todo = [(n, (square_with_threads, n)) for n in range(3)]
    run_in_processes(todo, 1, 10.0, results, errors, lambda k, s: None, progress=False, now=lambda: next(clock))
    assert set(results) == {0, 1} and not errors


def test_at_least_one_process():
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_in_processes([], 0, 1.0, {}, {}, lambda k, s: None)
