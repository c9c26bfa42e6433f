"""The reduced-precision section's readings: a meta-gradient's error set against the noise it must beat.

A bfloat16 meta-gradient is never equal to the float64 one; the question a user has is whether the
difference matters. Every meta-step is already a noisy estimate, drawn from one meta-batch of tasks,
so the yardstick is how far two meta-batches' exact meta-gradients lie apart: an error well inside
that spread is one more source of the noise training already averages away; an error as large as
the spread is not.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..paired import PairedComparison
from .comparisons import verdict

# An error at most this share of the between-batch spread counts as inside the noise.
INSIDE = 0.5

__all__ = ["INSIDE", "error_against_noise", "inside_noise", "training_reading"]


def inside_noise(error: float, spread: float) -> bool:
    """Whether a relative error is at most `INSIDE` times the relative spread between two meta-batches."""
    if spread <= 0:
        raise ValueError(f"the spread between meta-batches must be positive, got {spread}")
    if error < 0:
        raise ValueError(f"a relative error is not negative, got {error}")
    return error <= INSIDE * spread


def error_against_noise(errors: Mapping[str, tuple[float, float]]) -> tuple[list[str], list[str]]:
    """The settings (by name) whose error is inside the between-batch noise, and those whose is not.

    `errors` maps a setting's name ("MAML, 1 step") to (relative error, between-batch spread), both
    relative to the float64 meta-gradient's norm; the order of `errors` is kept in both lists.
    """
    inside = [name for name, (error, spread) in errors.items() if inside_noise(error, spread)]
    return inside, [name for name in errors if name not in inside]


def training_reading(c: PairedComparison, *, scale: float = 100.0, unit: str = " points") -> str:
    """What training in reduced precision did to accuracy, from the paired difference reduced − full.

    A direction only when the interval excludes zero; otherwise the interval's width says how large a
    difference the experiment could have missed.
    """
    low, high = f"{scale * c.low:+.1f}{unit}", f"{scale * c.high:+.1f}{unit}"
    word = verdict(c)
    if word == "no difference detected":
        return f"training in it ended where float32 did, within the paired interval ({low} to {high})"
    direction = "below" if word == "worse" else "above"
    gap = f"{scale * abs(c.difference):.1f}{unit}"
    return f"training in it ended {gap} {direction} float32 (paired interval {low} to {high})"
