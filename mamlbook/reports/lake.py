"""Lake et al.'s (2015) 20 one-shot runs: 20-way, within one alphabet, one training drawing per class.

Two classifiers are scored on them: the runs' own baseline, nearest neighbour under the Modified
Hausdorff Distance (MHD; Dubuisson and Jain, 1994) between ink pixels, which its authors report at
38.8% mean error; and a meta-learned model that adapts to each run's 20 training drawings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.omniglot import LakeRuns, load_lake_runs
from ..records import from_data, write_record
from ..tasks import TaskBatch
from ..train.checkpoint import CheckpointError, load_checkpoint
from ..train.evaluate import adaptation_curve
from ..train.restore import restore_run
from ..train.runconfig import DTYPES, TrainConfig
from .records import LakeReport

PUBLISHED_MHD_ERROR = 38.8  # percent, demo_classification.py in brendenlake/omniglot
WAYS = 20


def ink_points(ink: Tensor) -> Tensor:
    """Coordinates `[P, 2]` (float64) of the ink pixels of a `[105, 105]` bool image, centred on their mean.

    Centring makes the distance ignore where on the page a character was drawn, as in Lake's code.
    """
    points = ink.nonzero().double()
    return points - points.mean(dim=0)


def modified_hausdorff(a: Tensor, b: Tensor) -> Tensor:
    """MHD between point sets `[P, 2]` and `[R, 2]`: the larger of the two mean nearest-neighbour distances."""
    d = torch.cdist(a, b)
    return torch.maximum(d.min(dim=1).values.mean(), d.min(dim=0).values.mean())


def mhd_matrix(a_inks: Tensor, b_inks: Tensor) -> Tensor:
    """MHD between every image of `a_inks: [n, 105, 105]` and of `b_inks: [m, 105, 105]`, `[n, m]`.

    A run holds ~1,000 ink pixels per drawing, so brute force compares ~10^10 pairs of points over the
    20 runs; with SciPy installed, k-d trees find the same nearest neighbours exactly in seconds.
    """
    a_points = [ink_points(img) for img in a_inks]
    b_points = [ink_points(img) for img in b_inks]
    out = torch.empty(len(a_points), len(b_points), dtype=torch.float64)
    try:
        from scipy.spatial import cKDTree
    except ImportError:  # exact, only slower
        for i, a in enumerate(a_points):
            for j, b in enumerate(b_points):
                out[i, j] = modified_hausdorff(a, b)
        return out
    a_trees = [cKDTree(a.numpy()) for a in a_points]
    b_trees = [cKDTree(b.numpy()) for b in b_points]
    for i, a in enumerate(a_points):
        for j, b in enumerate(b_points):
            a_to_b = b_trees[j].query(a.numpy())[0].mean()
            b_to_a = a_trees[i].query(b.numpy())[0].mean()
            out[i, j] = max(a_to_b, b_to_a)
    return out


def mhd_predictions(runs: LakeRuns) -> Tensor:
    """`[20 runs, 20 test images]`: the training class nearest to each test drawing under MHD."""
    return torch.stack(
        [mhd_matrix(test, train).argmin(dim=1) for test, train in zip(runs.test_ink, runs.train_ink, strict=True)]
    )


def mhd_errors(runs: LakeRuns | None = None) -> Tensor:
    """Percent error of the MHD nearest-neighbour classifier in each of the 20 runs, `[20]`."""
    runs = load_lake_runs() if runs is None else runs
    return 100 * (mhd_predictions(runs) != runs.test_labels).double().mean(dim=1)


def lake_batch(runs: LakeRuns) -> TaskBatch:
    """The runs as a TaskBatch of 20 tasks: support = the 20 training drawings, query = the 20 test ones."""
    labels = torch.arange(WAYS).expand(runs.train_ink.shape[0], WAYS)
    return TaskBatch(runs.train_images(), labels.clone(), runs.test_images(), runs.test_labels.clone())


def checkpoint_ways(config: TrainConfig) -> int:
    """How many ways the checkpoint's model classifies (its head's width)."""
    return int(config.model_options.get("n_way", config.task_options.get("n_way", 5)))


def evaluate_lake_runs(
    checkpoint: str | os.PathLike,
    steps: int | None = None,
    inner_lr: float | None = None,
    runs: LakeRuns | None = None,
) -> dict[str, Any]:
    """Adapt the checkpoint's model to each run's training drawings and classify its test drawings.

    Returns per-run percent errors after 0 to `steps` inner steps (default: as trained) beside MHD's.
    """
    payload = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(payload["config"])
    if config.task != "omniglot":
        raise CheckpointError(f"checkpoint {checkpoint} was trained on {config.task!r}, not omniglot")
    ways = checkpoint_ways(config)
    if ways != WAYS:
        raise CheckpointError(
            f"checkpoint {checkpoint} was trained for {ways}-way tasks; Lake's runs are {WAYS}-way: "
            f"train one with `mamlbook train omniglot-20w1s`"
        )
    trained = restore_run(payload, checkpoint)
    if trained.learned and inner_lr is not None:
        raise ValueError(f"{trained.name} adapts with its learned inner rates; inner_lr cannot replace them")
    steps = config.inner_steps if steps is None else steps
    inner_lr = config.inner_lr if inner_lr is None else inner_lr
    runs = load_lake_runs() if runs is None else runs
    batch = lake_batch(runs).to(config.device, DTYPES[config.dtype])
    curve = adaptation_curve(
        trained.model, trained.params, batch, "ce", steps, inner_lr, with_accuracy=True, rule=trained.rule
    )["accuracy"]
    errors = 100 * (1 - curve.double().cpu())  # [20 runs, steps + 1]
    mhd = mhd_errors(runs)
    return {
        "checkpoint": str(checkpoint),
        "iteration": payload["iteration"],
        "steps": steps,
        "inner_lr": "learned" if trained.learned else inner_lr,
        "algorithm": trained.name,
        "maml_error_by_step": errors.mean(0).tolist(),
        "maml_error": errors[:, -1].tolist(),
        "mhd_error": mhd.tolist(),
        "maml_mean": errors[:, -1].mean().item(),
        "mhd_mean": mhd.mean().item(),
    }


def format_lake(maml: list[float] | None, mhd: list[float], name: str = "MAML") -> str:
    """Per-run percent errors, the mean last; the meta-learned model's column (`name`) only when given."""
    header = f"{'run':<6}" + (f"{name:>8}" if maml else "") + f"{'MHD':>8}"
    lines = ["Lake et al. (2015) one-shot runs, 20-way within-alphabet: error (%)", header]
    for r, m in enumerate(mhd):
        lines.append(f"run{r + 1:02d} " + (f"{maml[r]:>7.1f}%" if maml else "") + f"{m:>7.1f}%")
    mean_mhd = sum(mhd) / len(mhd)
    lines.append("mean  " + (f"{sum(maml) / len(maml):>7.1f}%" if maml else "") + f"{mean_mhd:>7.1f}%")
    return "\n".join(lines)


def write_lake(report: dict[str, Any], folder: str | os.PathLike) -> Path:
    return write_record(from_data(LakeReport, report, "lake.json"), Path(folder) / "lake.json", indent=2)
