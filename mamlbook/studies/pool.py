"""A study's jobs in separate processes, a few at a time, in order of priority: `run_in_processes`; or one
after another in this process (`run_in_order`, what `--jobs 1` runs), under the same rules.

The long studies (better-omniglot, medical, rl-paper, cheetah) train jobs of minutes to hours each.
They share this loop: at most `jobs` processes at once, started with spawn (a forked child cannot use
CUDA once the parent has touched it), each with its own torch thread count; no job starts after the
deadline; a job that fails is reported with its traceback and is not fatal: the hours of training
the rest of the plan holds are worth keeping. A worker whose study process is gone (killed, say, by
`kill PID` rather than Ctrl-C, which reaches the whole process group) ends within seconds instead of
training on as an orphan that holds a run folder's lock and a core.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

PARENT_POLL_SECONDS = 1.0


def exit_with_parent(parent: int, poll: float = PARENT_POLL_SECONDS) -> threading.Thread:
    """Watch, in a daemon thread, that process `parent` is still this process's parent; end this process
    at once when it is not (an orphan is re-parented, so its parent id changes)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    watcher = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    watcher.start()
    return watcher


def set_threads(threads: int, parent: int | None = None) -> None:
    """A worker's initializer: its torch thread count, and an end with its study process (`parent`)."""
    torch.set_num_threads(threads)
    if parent is not None:
        exit_with_parent(parent)


def _record_failure(key: Hashable, error: BaseException, errors: dict, progress: bool) -> None:
    errors[key] = f"{type(error).__name__}: {error}"
    if progress:  # a worker's traceback travels as the error's cause
        print("".join(traceback.format_exception(error))[-3000:], file=sys.stderr, flush=True)


def run_in_order(
    todo: Sequence[tuple[Hashable, tuple]],
    deadline: float,
    results: dict,
    errors: dict,
    announce: Callable[[Any, float], None],
    *,
    progress: bool = True,
    now: Callable[[], float] = time.perf_counter,
) -> None:
    """`run_in_processes` with one job at a time in this process: the same order, deadline and
    results, and a job that fails is recorded in `errors`, not fatal (say, a job whose run folder
    another study process is writing). Ctrl-C still stops the study."""
    for key, (function, *args) in todo:
        if now() >= deadline:
            break
        started = time.perf_counter()
        try:
            results[key] = function(*args)
        except Exception as error:  # noqa: BLE001 - reported with the job, see the docstring
            _record_failure(key, error, errors, progress)
        announce(key, time.perf_counter() - started)


def run_in_processes(
    todo: Sequence[tuple[Hashable, tuple]],
    jobs: int,
    deadline: float,
    results: dict,
    errors: dict,
    announce: Callable[[Any, float], None],
    *,
    threads: int = 1,
    progress: bool = True,
    now: Callable[[], float] = time.perf_counter,
) -> None:
    """Run each `(key, (function, *args))` of `todo`, in order, `jobs` at a time in spawned processes of
    `threads` torch threads, starting none once `now()` reaches `deadline`. `function` must be importable
    by name (it is sent to the worker by reference). Its return value goes to `results[key]`; an
    exception to `errors[key]` as "Type: message", with its traceback printed when `progress`. After
    each job, `announce(key, seconds)`."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    pending, running = list(todo), {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=set_threads, initargs=(threads, os.getpid())
    ) as pool:
        while pending or running:
            while pending and len(running) < jobs and now() < deadline:
                key, (function, *args) = pending.pop(0)
                future: Future = pool.submit(function, *args)
                running[future] = (key, time.perf_counter())
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                key, started = running.pop(future)
                try:
                    results[key] = future.result()
                except Exception as error:  # noqa: BLE001 - reported with the job, see the docstring
                    _record_failure(key, error, errors, progress)
                announce(key, time.perf_counter() - started)
