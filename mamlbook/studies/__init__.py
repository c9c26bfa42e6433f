"""The book's studies, by name: the registry `mamlbook study NAME` runs from.

The top layer beside the command line: studies train and report through `mamlbook.train` and
`mamlbook.reports`, and nothing in the library imports them. Registration is this explicit table.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import better, better_omniglot, cheetah, medical, omniglot_prototypes, precision, rl, rl_paper, sweep
from .base import TEST_SEED, load_result, machine, result_from_data, save_result
from .records import RESULT_TYPES, StudyResult

STUDIES: dict[str, Callable[..., dict[str, Any]]] = {
    "sweep": sweep.sweep,
    "better": better.better,
    "better-omniglot": better_omniglot.better_omniglot,
    "omniglot-prototypes": omniglot_prototypes.omniglot_prototypes,
    "medical": medical.medical,
    "rl": rl.rl,
    "rl-paper": rl_paper.rl_paper,
    "cheetah": cheetah.cheetah,
    "precision": precision.precision,
}


def run_study(
    name: str,
    small: bool = False,
    iterations: int | None = None,
    progress: bool = True,
    command: str | None = None,
    **options: Any,
) -> StudyResult:
    """Run study `name` and return its typed result, stamped with what produced it.

    `options` go to the study itself (`trained_only=True` for better-omniglot); a study that does
    not take one refuses it rather than ignoring it.
    """
    from .. import __version__

    try:
        study = STUDIES[name]
    except KeyError:
        raise ValueError(f"unknown study {name!r}; known studies: {', '.join(sorted(STUDIES))}") from None
    accepted = inspect.signature(study).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"study {name!r} does not take {', '.join(unknown)}")
    started = time.perf_counter()
    result = study(small=small, iterations=iterations, progress=progress, **options)
    data = {
        "study": name,
        "small": small,
        "command": command or f"mamlbook study {name}" + (" --small" if small else ""),
        "mamlbook_version": __version__,
        "machine": machine(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        **result,
    }
    return result_from_data(data, f"study {name}", new=True)


__all__ = [
    "RESULT_TYPES",
    "STUDIES",
    "TEST_SEED",
    "StudyResult",
    "load_result",
    "machine",
    "result_from_data",
    "run_study",
    "save_result",
]
