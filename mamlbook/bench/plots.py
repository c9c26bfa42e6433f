"""The benchmark's two pictures: time against meta-batch size, peak memory against inner steps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _label(row: dict[str, Any]) -> str:
    return row["impl"] if row["impl"] in ("learn2learn", "higher", "torchopt") else f"{row['impl']}:{row['strategy']}"


def _series(rows: Sequence[dict[str, Any]], x: str, y: str, other: str) -> dict[str, list[tuple[float, float]]]:
    """One line per problem, impl and value of `other` (the dimension not on the x-axis)."""
    several = len({r[other] for r in rows}) > 1
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get(y) is not None:
            name = f"{r['problem']} {_label(r)}" + (f" {other}={r[other]}" if several else "")
            series.setdefault(name, []).append((r[x], r[y]))
    return {k: sorted(v) for k, v in series.items()}


def plot_bench(rows: Sequence[dict[str, Any]], path: str | Path | None = None, memory: str = "peak_mib"):
    """Two panels: median ms against meta-batch (one line per impl), `memory` against inner steps.

    A panel whose x-axis has a single value across the rows is drawn as points. Returns the figure,
    or the path it was saved to when `path` is given.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in _series(rows, "meta_batch", "ms_median", "steps").items():
        left.plot(*zip(*points, strict=True), marker="o", label=name)
    left.set(xlabel="meta-batch size (tasks)", ylabel="ms per meta-iteration (median)", yscale="log")
    left.set_title("time against meta-batch")
    for name, points in _series(rows, "steps", memory, "meta_batch").items():
        right.plot(*zip(*points, strict=True), marker="o", label=name)
    right.set(xlabel="inner steps", ylabel=f"{memory.replace('_mib', '')} memory (MiB)")
    right.set_title("memory against inner steps")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
