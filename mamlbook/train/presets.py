"""Named training configurations: the paper's hyperparameters for a GPU, and a CPU size for the book.

`paper` follows Finn et al. (2017), section 5.1 and appendix A.1: Conv4 with 64 filters, Adam at
1e-3, 60,000 meta-iterations; 5-way: one inner step at alpha = 0.4 and 32 tasks per meta-batch
(evaluated with 3 steps); 20-way: five inner steps at alpha = 0.1 and 16 tasks (evaluated with 5).
Their code draws as many query as support drawings per class.

`cpu` keeps the model, the inner learning rate and second-order MAML, and shrinks what costs time
on a CPU: fewer, smaller meta-batches and fewer inner steps, with more query drawings per class
so each task's meta-gradient is less noisy. Each takes 15 to 40 minutes on one idle core of a
2-core AMD EPYC (omniglot-5w1s: 2,400 meta-iterations at about 0.9 s; at 1,200 it fell just
short of 90% on the meta-test alphabet, 89.5%, and its validation accuracy was still rising). Run
with OMP_NUM_THREADS=1 when other work runs on the machine: torch's threads then stop fighting over cores.

`pbc-3w1s` and `pbc-3w5s` are blood-cell tasks (`mamlbook.tasks.pbc`, split 1; pass
`task_options={"n_way": 3, "split_id": 2}` for the other split): 3-way, because 8 cell types leave 3
for meta-testing. They have a `cpu` size only, Conv4 with 32 filters on 3-channel 28x28 images, and
the Omniglot CPU preset's inner loop (one second-order step) at alpha = 0.1, not 0.4: in a pilot
before the study (split 1, 1-shot, 150 meta-iterations) validation accuracy reached 88% at 0.1 and
70% at 0.4. 15 query images per class, because each task's accuracy is then measured to 1/45, and
4 tasks per meta-batch, because query images are what a meta-iteration spends its time on (about
0.2 s for 1-shot, 0.3 s for 5-shot on one core of that CPU). The chapter "Medical
imaging" says what they reach.
"""

from __future__ import annotations

from typing import Any

from .runconfig import TrainConfig


def _omniglot(n_way: int, k_shot: int, **settings: Any) -> dict[str, Any]:
    return {
        "task": "omniglot",
        "model": "conv4",
        "k_shot": k_shot,
        "task_options": {"n_way": n_way},
        "model_options": {"n_way": n_way},
        **settings,
    }


def _pbc(k_shot: int, **settings: Any) -> dict[str, Any]:
    return {
        "task": "pbc",
        "model": "conv4",
        "k_shot": k_shot,
        "task_options": {"n_way": 3, "split_id": 1},
        "model_options": {"n_way": 3, "in_channels": 3, "hidden": 32},
        **settings,
    }


PAPER_5WAY = {"meta_batch": 32, "inner_steps": 1, "inner_lr": 0.4, "meta_lr": 1e-3, "iterations": 60_000}
PAPER_20WAY = {"meta_batch": 16, "inner_steps": 5, "inner_lr": 0.1, "meta_lr": 1e-3, "iterations": 60_000}
PAPER_RUN = {"eval_every": 500, "eval_tasks": 100, "checkpoint_every": 2000, "device": "cuda"}
CPU_RUN = {"eval_every": 50, "eval_tasks": 50, "checkpoint_every": 100, "device": "cpu"}
PBC_CPU = {"k_query": 15, "meta_batch": 4, "inner_steps": 1, "inner_lr": 0.1, "meta_lr": 1e-3, "iterations": 300}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "omniglot-5w1s": {
        "paper": _omniglot(5, 1, k_query=1, **PAPER_5WAY, **PAPER_RUN),
        "cpu": _omniglot(
            5, 1, k_query=5, meta_batch=8, inner_steps=1, inner_lr=0.4, meta_lr=1e-3, iterations=2400, **CPU_RUN
        ),
    },
    "omniglot-5w5s": {
        "paper": _omniglot(5, 5, k_query=5, **PAPER_5WAY, **PAPER_RUN),
        "cpu": _omniglot(
            5, 5, k_query=5, meta_batch=8, inner_steps=1, inner_lr=0.4, meta_lr=1e-3, iterations=800, **CPU_RUN
        ),
    },
    "omniglot-20w1s": {
        "paper": _omniglot(20, 1, k_query=1, **PAPER_20WAY, **PAPER_RUN),
        "cpu": _omniglot(
            20, 1, k_query=2, meta_batch=4, inner_steps=1, inner_lr=0.4, meta_lr=1e-3, iterations=1000, **CPU_RUN
        ),
    },
    "pbc-3w1s": {"cpu": _pbc(1, **PBC_CPU, **CPU_RUN)},
    "pbc-3w5s": {"cpu": _pbc(5, **PBC_CPU, **CPU_RUN)},
}
# Inner steps used at meta-test time, as in the paper (more than in training for 5-way).
EVAL_STEPS = {"omniglot-5w1s": 3, "omniglot-5w5s": 3, "omniglot-20w1s": 5, "pbc-3w1s": 3, "pbc-3w5s": 3}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def preset_config(name: str, size: str = "cpu", **overrides: Any) -> TrainConfig:
    """The `TrainConfig` of preset `name` at `size` ("cpu" or "paper"), with `overrides` applied."""
    try:
        sizes = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}") from None
    try:
        values = sizes[size]
    except KeyError:
        raise ValueError(f"unknown preset size {size!r} for {name}; known sizes: {', '.join(sizes)}") from None
    return TrainConfig.from_dict({**values, **overrides})
