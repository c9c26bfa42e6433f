"""Figures the trainer and the command line write to disk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curve(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Meta-training loss and held-out post-adaptation loss against meta-iterations (log scale)."""
    it = [row["iteration"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(it, [row["train_loss"] for row in history], label="meta-train query loss")
    ax.plot(it, [row["val_loss_pre"] for row in history], label="held-out, before adapting", ls=":")
    ax.plot(it, [row["val_loss_post"] for row in history], label="held-out, after adapting")
    ax.set(xlabel="meta-iteration", ylabel="loss", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_adaptation_curves(curves: dict[str, Sequence[float]], path: str | Path, ylabel: str = "query MSE") -> Path:
    """Loss against the number of inner gradient steps, one line per method (Finn et al., Figure 3)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in curves.items():
        ax.plot(range(len(values)), values, marker="o", label=name)
    ax.set(xlabel="gradient steps at meta-test time", ylabel=ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
