"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse


def comma_ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def comma_names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]
