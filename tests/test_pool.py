"""The studies' job runners (`studies.pool.run_in_processes`, `run_in_order`): order, deadline, failures kept apart, and
no worker left behind when the study process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mamlbook.studies.pool import PARENT_POLL_SECONDS, run_in_order, run_in_processes


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


def record_pid_and_wait(path: str, seconds: float) -> int:
    """A job that says which process runs it, then outlives the test unless something ends it."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent (a container's init may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_worker_ends_when_its_study_process_is_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from test_pool import record_pid_and_wait\n"
              "from mamlbook.studies.pool import run_in_processes\n"
              f"run_in_processes([(0, (record_pid_and_wait, {str(pid_file)!r}, 120.0))], 1, float('inf'), {{}}, {{}},"
              " lambda k, s: None, progress=False)\n")  # fmt: skip
    study = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert study.poll() is None and time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        study.send_signal(signal.SIGKILL)  # no handler runs: only the worker's own watch can end it
        study.wait()
        deadline = time.monotonic() + 15 * PARENT_POLL_SECONDS
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker trained on as an orphan"
    finally:
        study.kill()


def test_in_order_a_failure_is_kept_apart_and_the_deadline_holds():
    results, errors, announced = {}, {}, []
    todo = [(n, (square_with_threads, x)) for n, x in enumerate([2, -1, 3, 4])]
    clock = iter([0.0, 1.0, 2.0, 20.0])  # the fourth job is checked after the deadline (10)
    run_in_order(todo, 10.0, results, errors, lambda k, s: announced.append(k), progress=False, now=lambda: next(clock))
    assert results == {0: (4, torch.get_num_threads()), 2: (9, torch.get_num_threads())}
    assert errors == {1: "ValueError: negative input -1"} and announced == [0, 1, 2]


def interrupt(_: int) -> None:
    raise KeyboardInterrupt


def test_in_order_ctrl_c_still_stops_the_study():
    with pytest.raises(KeyboardInterrupt):
        run_in_order([(0, (interrupt, 0)), (1, (square_with_threads, 1))], float("inf"), {}, {}, lambda k, s: None)
