"""Few-shot blood-cell classification (PBC) against the baselines a clinician would ask about: `mamlbook study medical`.

Every method is scored on the same meta-test tasks: for each split (1, 2) and K (1, 5 shots), 600
3-way tasks of the 3 cell types held out of meta-training, drawn once from `TEST_SEED`, with 15
query images per type. The methods:

- MAML (three seeds) and Meta-SGD (seed 0), meta-trained on the 5 other types (`pbc-3wKs` presets);
- transfer: Conv4 trained as a plain 5-way classifier on every image of the meta-training types
  (three seeds), then a new 3-way head fitted to the K shots on its frozen features (Chen et
  al. 2019's "Baseline"), and nearest class mean on the same features (a prototype classifier);
- from scratch: the same Conv4, randomly initialized, trained on the K shots alone;
- cross-domain: MAML meta-trained on Omniglot (3-way, the minimal split, grey 28x28 characters),
  adapted to the cells in grey with the stain as ink (1 - luma), as Omniglot draws ink as 1.

A cell of the result's `table` is the mean over a method's seeds with the envelope of the seeds'
95% intervals over the tasks; MAML "beats" a method in a cell only where the two envelopes separate.

Each trained model lives in the cache under a hash of its configuration; a cut-short run resumes
from its checkpoint, and a finished job's scores are kept beside it, so the study can be stopped
and restarted without losing work. Jobs run in order of priority (seed 0 of everything, then the
other seeds), so a study stopped by `time_limit` holds whole comparisons and names the rest under
`missing`. Costs are core-seconds of the machine that ran it (`machine` in the result).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import cache_root
from ..data.pbc import CITATION, DOI_URL, LICENSE, pbc_files
from ..functional import forward
from ..meta import Shifted, adapt
from ..meta.mamlpp import at_step
from ..models import Conv4
from ..tasks import TaskBatch
from ..tasks.pbc import PBC, SPLIT_NAMES, grayscale, split_classes
from ..train.checkpoint import load_checkpoint, save_checkpoint
from ..train.evaluate import mean_ci95
from ..train.presets import PRESETS, preset_config
from ..train.restore import restore_run
from ..train.runconfig import TrainConfig
from ..train.trainer import Trainer
from .base import TEST_SEED
from .better_omniglot import seed_interval, training_seconds
from .records import significant

FORMAT = 1
SPLIT_IDS, SHOTS, SEEDS = (1, 2), (1, 5), (0, 1, 2)
N_WAY, K_QUERY, TEST_TASKS, TEST_STEPS = 3, 15, 600, 3
PRESET = {1: "pbc-3w1s", 5: "pbc-3w5s"}
# The budget: the presets' 300 meta-iterations cut to 200, so the whole study fits about an hour of one core.
ITERATIONS = 200
METHODS = {
    "MAML": "meta-trained on the 5 other cell types; adapts every weight by SGD on the K shots",
    "Meta-SGD": "as MAML, with a learned inner learning rate per weight",
    "Transfer (new head)": "5-way classifier trained on the other types' images; new 3-way head fitted to the K shots",
    "Nearest class mean": "the transfer model's features; each query goes to the closest mean of a type's shots",
    "From scratch": "Conv4 from random weights, trained on the K shots alone",
    "MAML from Omniglot": "MAML meta-trained on handwritten characters, adapted to grey cells (stain as ink)",
}
SEEDED = ("MAML", "Transfer (new head)", "Nearest class mean")  # three seeds; the others seed 0
PRETRAIN = {"epochs": 20, "batch_size": 50, "lr": 1e-3}
HEAD = {"lr": 0.01, "record": (0, 10, 25, 50, 100)}
SCRATCH = {"lr": 0.01, "record": (0, 2, 5, 10)}
HIDDEN = 32
SMALL = {
    "train": {"iterations": 2, "meta_batch": 2, "eval_every": 2, "eval_tasks": 2, "checkpoint_every": 2},
    "hidden": 8,
    "seeds": (0, 1),
    "test_tasks": 3,
    "test_steps": 2,
    "pretrain": {"epochs": 1, "batch_size": 100, "lr": 1e-3},
    "head": {"lr": 0.01, "record": (0, 3)},
    "scratch": {"lr": 0.01, "record": (0, 2)},
}


# ----- configurations -----
def meta_config(
    algorithm: str,
    split_id: int,
    k_shot: int,
    seed: int,
    variant: str,
    small: bool = False,
    iterations: int | None = None,
) -> TrainConfig:
    """A PBC meta-training run: the K-shot preset on `split_id`, with the study's budget."""
    changes: dict[str, Any] = dict(SMALL["train"]) if small else {"iterations": ITERATIONS}
    if iterations is not None:
        changes["iterations"] = iterations
    hidden = SMALL["hidden"] if small else HIDDEN
    return preset_config(
        PRESET[k_shot],
        "cpu",
        algorithm=algorithm,
        seed=seed,
        task_options={"n_way": N_WAY, "split_id": split_id, "variant": variant},
        model_options={"n_way": N_WAY, "in_channels": 3, "hidden": hidden},
        **changes,
    )


def omniglot_config(k_shot: int, seed: int = 0, small: bool = False, iterations: int | None = None) -> TrainConfig:
    """MAML on Omniglot with the PBC runs' shape and budget (3-way, K shots, Conv4 of the same width),
    its own inner learning rate (the Omniglot preset's 0.4) and one grey input channel."""
    pbc = PRESETS[PRESET[k_shot]]["cpu"]
    changes: dict[str, Any] = {"k_query": pbc["k_query"], "meta_batch": pbc["meta_batch"], "iterations": ITERATIONS}
    if small:
        changes.update(SMALL["train"])
    if iterations is not None:
        changes["iterations"] = iterations
    return preset_config(
        "omniglot-5w1s",
        "cpu",
        k_shot=k_shot,
        seed=seed,
        task_options={"n_way": N_WAY},
        model_options={"n_way": N_WAY, "in_channels": 1, "hidden": SMALL["hidden"] if small else HIDDEN},
        **changes,
    )


def _key(payload: Any) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT, **payload}, sort_keys=True).encode()).hexdigest()[:16]


def study_folder() -> Path:
    return cache_root() / "studies" / "medical"


# ----- the shared meta-test tasks -----
def test_tasks(split_id: int, k_shot: int, tasks: int, data=None) -> tuple[PBC, TaskBatch]:
    """The meta-test tasks every method of (`split_id`, `k_shot`) is scored on: one seed for all."""
    distribution = PBC(k_shot, K_QUERY, N_WAY, "test", split_id, data=data)
    return distribution, distribution.sample(tasks, torch.Generator().manual_seed(TEST_SEED))


def as_stain_ink(batch: TaskBatch) -> TaskBatch:
    """The same tasks in grey with the stain bright (1 - luma): how an Omniglot model (ink = 1) sees cells."""
    return TaskBatch(
        1 - grayscale(batch.support_x), batch.support_y, 1 - grayscale(batch.query_x), batch.query_y, batch.info
    )


def _channels_last(x: Tensor) -> Tensor:
    """`[..., C, H, W]` stored so that every image slice is channels-last: twice as fast for Conv4 on this CPU."""
    if x.dim() < 4:
        return x
    order = [*range(x.dim() - 3), x.dim() - 2, x.dim() - 1, x.dim() - 3]
    back = [*range(x.dim() - 3), x.dim() - 1, x.dim() - 3, x.dim() - 2]
    return x.permute(order).contiguous().permute(back)


# ----- scoring -----
def score(correct_by_step: Tensor, steps: list[int], predictions: Tensor, batch: TaskBatch, names: tuple[str, ...]):
    """Accuracy by step over tasks (mean, 95% interval), and per cell type and confusion at the last step.

    `correct_by_step: [B, len(steps)]` per-task accuracies; `predictions: [B, N*Q]` predicted labels.
    """
    stats = [mean_ci95(correct_by_step[:, i]) for i in range(len(steps))]
    true_type = batch.info["classes"].gather(1, batch.query_y)  # [B, N*Q] class ids
    said_type = batch.info["classes"].gather(1, predictions)
    ids = sorted(set(true_type.flatten().tolist()))
    confusion = [[int(((true_type == t) & (said_type == s)).sum()) for s in ids] for t in ids]
    per_class = {names[t]: row[i] / max(sum(row), 1) for i, (t, row) in enumerate(zip(ids, confusion, strict=True))}
    return {
        "steps": steps,
        "accuracy_by_step": [m for m, _ in stats],
        "ci95_by_step": [c for _, c in stats],
        "per_class": per_class,
        "confusion": {"types": [names[t] for t in ids], "counts": confusion},
    }


def adapt_and_score(model, params, rule, batch: TaskBatch, steps: int, inner_lr: float, trained_steps: int):
    """Adapt to each task by 0..`steps` inner steps (the model's own rule); per-task query accuracy `[B, steps+1]`
    and the predictions after `trained_steps` steps."""
    params = {k: _channels_last(v.detach()) for k, v in params.items()}
    sx, qx = _channels_last(batch.support_x), _channels_last(batch.query_x)
    accuracies, predictions = [], []
    for i in range(len(batch)):
        current, row = params, []
        for step in range(steps + 1):
            with at_step(model, max(step - 1, 0)):
                if step:
                    shifted = None if rule is None else Shifted(rule, step - 1)
                    current = adapt(model, current, sx[i], batch.support_y[i], "ce", 1, inner_lr, 0, rule=shifted)
                with torch.no_grad():
                    out = forward(model, current, qx[i])
            row.append((out.argmax(-1) == batch.query_y[i]).float().mean())
            if step == trained_steps:
                predictions.append(out.argmax(-1))
        accuracies.append(torch.stack(row))
    return torch.stack(accuracies), torch.stack(predictions)


def pretrain_classifier(tasks: PBC, hidden: int, seed: int, epochs: int, batch_size: int, lr: float):
    """Conv4 as a plain classifier of the meta-training types (every image of theirs), Adam on cross-entropy.

    Returns the trained network and its history (train loss and accuracy on the held-out images per epoch).
    """
    train, val = tasks.for_split("train").sampler, tasks.for_split("val").sampler

    def examples(sampler):
        keep = torch.isin(sampler.labels, sampler.classes)
        labels = (sampler.labels[keep].unsqueeze(1) == sampler.classes).float().argmax(1)  # ids -> 0..N-1
        return _channels_last(sampler.images[keep].float() / 255), labels

    x, y = examples(train)
    vx, vy = examples(val)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Conv4(len(train.classes), x.shape[1], hidden).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history, started = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        order, losses = torch.randperm(len(y), generator=generator), []
        for start in range(0, len(y), batch_size):
            rows = order[start : start + batch_size]
            loss = F.cross_entropy(net(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            val_acc = (net(vx).argmax(1) == vy).float().mean().item()
        history.append(
            {
                "epoch": epoch,
                "train_loss": sum(losses) / len(losses),
                "val_accuracy": val_acc,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    return net, history


def transfer_and_score(net: Conv4, batch: TaskBatch, record: tuple[int, ...], lr: float):
    """Features of each task's support and query images (frozen body, batch statistics of the whole task),
    then a new linear head fitted to the K shots by Adam (query accuracy at the `record` steps) and
    nearest class mean. Returns {"head": (acc [B, R], predictions), "ncm": (acc [B, 1], predictions)}."""
    n_support = batch.support_x.shape[1]
    sx, qx = _channels_last(batch.support_x), _channels_last(batch.query_x)
    with torch.no_grad():
        feats = torch.stack([net.body(torch.cat([sx[i], qx[i]])) for i in range(len(batch))])
    support, query = feats[:, :n_support], feats[:, n_support:]
    n_way = int(batch.support_y.max()) + 1
    # nearest class mean
    onehot = F.one_hot(batch.support_y, n_way).float()  # [B, S, N]
    means = onehot.transpose(1, 2) @ support / onehot.sum(1).unsqueeze(-1)  # [B, N, D]
    ncm_pred = torch.cdist(query, means).argmin(-1)
    ncm_acc = (ncm_pred == batch.query_y).float().mean(1, keepdim=True)
    # a new head per task, all tasks at once (Adam is elementwise, so summed losses keep tasks apart)
    weight = torch.zeros(len(batch), support.shape[-1], n_way, requires_grad=True)
    bias = torch.zeros(len(batch), 1, n_way, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    accs = []
    for step in range(max(record) + 1):
        if step in record:
            with torch.no_grad():
                head_pred = (query @ weight + bias).argmax(-1)
            accs.append((head_pred == batch.query_y).float().mean(1))
        if step == max(record):
            break
        logits = support @ weight + bias
        loss = F.cross_entropy(logits.flatten(0, 1), batch.support_y.flatten(), reduction="sum") / n_support
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"head": (torch.stack(accs, 1), head_pred), "ncm": (ncm_acc, ncm_pred)}


def scratch_and_score(batch: TaskBatch, hidden: int, seed: int, record: tuple[int, ...], lr: float):
    """Conv4 from the same random weights for every task, trained by Adam on the K shots; query accuracy at `record`."""
    channels = batch.support_x.shape[2]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Conv4(int(batch.support_y.max()) + 1, channels, hidden).to(memory_format=torch.channels_last)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    sx, qx = _channels_last(batch.support_x), _channels_last(batch.query_x)
    accuracies, predictions = [], []
    for i in range(len(batch)):
        net.load_state_dict(start)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        row = []
        for step in range(max(record) + 1):
            if step in record:
                with torch.no_grad():
                    pred = net(qx[i]).argmax(-1)
                row.append((pred == batch.query_y[i]).float().mean())
            if step == max(record):
                break
            loss = F.cross_entropy(net(sx[i]), batch.support_y[i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        accuracies.append(torch.stack(row))
        predictions.append(pred)
    return torch.stack(accuracies), torch.stack(predictions)


# ----- jobs -----
class Study:
    """The plan and its shared pieces (data, test tasks), for one size (full or small)."""

    def __init__(self, small: bool, iterations: int | None, progress: bool) -> None:
        self.small, self.iterations, self.progress = small, iterations, progress
        self.files = pbc_files()
        self.variant = self.files.variant
        self.seeds = SMALL["seeds"] if small else SEEDS
        self.tasks = SMALL["test_tasks"] if small else TEST_TASKS
        self.steps = SMALL["test_steps"] if small else TEST_STEPS
        self.hidden = SMALL["hidden"] if small else HIDDEN
        self.pretrain = SMALL["pretrain"] if small else PRETRAIN
        self.head = SMALL["head"] if small else HEAD
        self.scratch = SMALL["scratch"] if small else SCRATCH
        self._tests: dict[tuple[int, int], tuple[PBC, TaskBatch]] = {}
        self._folders: dict[str, Path] = {}
        self._configs: dict[str, TrainConfig | None] = {}
        self._data = None

    def test(self, split_id: int, k_shot: int) -> tuple[PBC, TaskBatch]:
        if (split_id, k_shot) not in self._tests:
            distribution, batch = test_tasks(split_id, k_shot, self.tasks, self._data)
            self._data = distribution.data
            self._tests[split_id, k_shot] = distribution, batch
        return self._tests[split_id, k_shot]

    @property
    def test_settings(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "steps": self.steps,
            "seed": TEST_SEED,
            "k_query": K_QUERY,
            "n_way": N_WAY,
            "variant": self.variant,
            "data": self.files.key[:16],
        }

    def plan(self) -> list[dict[str, Any]]:
        """Every job, most important first: seed 0 of every method on every split, then the other seeds."""
        jobs = []
        for seed in self.seeds:
            for split_id in SPLIT_IDS:
                for k in SHOTS:
                    jobs.append(
                        {
                            "kind": "meta",
                            "method": "MAML",
                            "algorithm": "maml",
                            "split": split_id,
                            "k_shot": k,
                            "seed": seed,
                        }
                    )
                jobs.append({"kind": "pretrain", "method": "Transfer", "split": split_id, "seed": seed})
                if seed == self.seeds[0]:
                    for k in SHOTS:
                        jobs.append(
                            {"kind": "scratch", "method": "From scratch", "split": split_id, "k_shot": k, "seed": seed}
                        )
                        jobs.append(
                            {
                                "kind": "meta",
                                "method": "Meta-SGD",
                                "algorithm": "metasgd",
                                "split": split_id,
                                "k_shot": k,
                                "seed": seed,
                            }
                        )
            if seed == self.seeds[0]:
                for k in SHOTS:
                    jobs.append({"kind": "omniglot", "method": "MAML from Omniglot", "k_shot": k, "seed": seed})
        return jobs

    def config(self, job: dict[str, Any]) -> TrainConfig | None:
        """The job's training configuration (None for jobs that are not a Trainer run), built once:
        building one validates its tasks, which reads PBC's file list."""
        name = json.dumps(job, sort_keys=True)
        if name not in self._configs:
            self._configs[name] = self._config(job)
        return self._configs[name]

    def _config(self, job: dict[str, Any]) -> TrainConfig | None:
        if job["kind"] == "meta":
            return meta_config(
                job["algorithm"], job["split"], job["k_shot"], job["seed"], self.variant, self.small, self.iterations
            )
        if job["kind"] == "omniglot":
            return omniglot_config(job["k_shot"], job["seed"], self.small, self.iterations)
        return None

    def folder(self, job: dict[str, Any]) -> Path:
        """Where a job's model and scores live: trained models under their configuration's hash."""
        name = json.dumps(job, sort_keys=True)
        if name not in self._folders:
            self._folders[name] = self._folder(job)
        return self._folders[name]

    def _folder(self, job: dict[str, Any]) -> Path:
        config = self.config(job)
        if config is not None:
            # Keys of runs cached before `precision` existed stay valid: full precision is left out.
            settings = {k: v for k, v in config.to_dict().items() if not (k == "precision" and v == "fp32")}
            what: dict[str, Any] = {"config": settings}
        elif job["kind"] == "pretrain":
            what = {"job": job, "hidden": self.hidden, "pretrain": self.pretrain, "data": self.files.key[:16]}
        else:
            what = {"job": job, "hidden": self.hidden, "scratch": self.scratch}
        return study_folder() / job["kind"] / _key(what)

    def results_path(self, job: dict[str, Any]) -> Path:
        extra = {"head": self.head} if job["kind"] == "pretrain" else {}
        return self.folder(job) / f"scores-{_key({'test': self.test_settings, **extra})}.json"

    def run(self, job: dict[str, Any], rescore: bool = True) -> list[dict[str, Any]]:
        """Train (or finish training) the job's model, score it on the shared test tasks, and keep the scores.

        Scores kept before rows had per-task scores are scored again from the saved model (`rescore`),
        so every method can be compared task by task; with `rescore=False` they are read as they are.
        """
        path = self.results_path(job)
        if path.exists():
            rows = json.loads(path.read_text())
            if not rescore or all("per_task" in row for row in rows):
                return rows
        folder = self.folder(job)
        rows = getattr(self, f"_run_{job['kind']}")(job, folder)
        path.write_text(json.dumps(rows, indent=1) + "\n")
        return rows

    def _row(self, method, split_id, k_shot, seed, scored, correct: Tensor, started, **extra) -> dict[str, Any]:
        """One result row; `correct: [B, len(steps)]` per-task accuracies, kept at the headline step as
        `per_task` (the shared test tasks' order, the same for every method and seed)."""
        last = len(scored["steps"]) - 1 if "headline_index" not in extra else extra.pop("headline_index")
        return {
            "method": method,
            "split": split_id,
            "k_shot": k_shot,
            "seed": seed,
            "accuracy": scored["accuracy_by_step"][last],
            "accuracy_ci95": scored["ci95_by_step"][last],
            "headline_step": scored["steps"][last],
            **scored,
            "test_seconds": round(time.perf_counter() - started, 1),
            "tasks": self.tasks,
            **extra,
            "per_task": significant(correct[:, last].tolist()),
        }

    def _train(self, config: TrainConfig, folder: Path) -> tuple[Trainer, list[dict[str, Any]]]:
        trainer = Trainer.resume(folder) if (folder / "checkpoint.pt").exists() else Trainer(config, folder)
        # Small runs are the chapter's smoke test: a learning curve per tiny run would cost more than the run.
        history = trainer.fit(progress=False, plot=not self.small)
        return trainer, history

    def _meta_rows(self, job, folder, batches) -> list[dict[str, Any]]:
        config = self.config(job)
        _, history = self._train(config, folder)
        restored = restore_run(load_checkpoint(folder), folder)
        rate = 1.0 if restored.learned else config.inner_lr
        rows = []
        for split_id, batch, names in batches:
            started = time.perf_counter()
            acc, pred = adapt_and_score(
                restored.model, restored.params, restored.rule, batch, self.steps, rate, config.inner_steps
            )
            scored = score(acc, list(range(self.steps + 1)), pred, batch, names)
            rows.append(
                self._row(
                    job["method"],
                    split_id,
                    job["k_shot"],
                    job["seed"],
                    scored,
                    acc,
                    started,
                    headline_index=config.inner_steps,
                    train_seconds=training_seconds(history),
                    iterations=config.iterations,
                    inner_lr=config.inner_lr,
                    val_curve=[[r["iteration"], r.get("val_accuracy_post")] for r in history],
                    key=folder.name,
                )
            )
        return rows

    def _run_meta(self, job, folder) -> list[dict[str, Any]]:
        distribution, batch = self.test(job["split"], job["k_shot"])
        return self._meta_rows(job, folder, [(job["split"], batch, distribution.sampler.class_names)])

    def _run_omniglot(self, job, folder) -> list[dict[str, Any]]:
        batches = []
        for split_id in SPLIT_IDS:
            distribution, batch = self.test(split_id, job["k_shot"])
            batches.append((split_id, as_stain_ink(batch), distribution.sampler.class_names))
        return self._meta_rows(job, folder, batches)

    def _run_pretrain(self, job, folder) -> list[dict[str, Any]]:
        path = folder / "pretrained.pt"
        distribution, _ = self.test(job["split"], SHOTS[0])
        net = Conv4(len(split_classes(job["split"])["train"]), 3, self.hidden).to(memory_format=torch.channels_last)
        if path.exists():
            payload = load_checkpoint(path)
            net.load_state_dict(payload["state"])
        else:
            net, history = pretrain_classifier(distribution, self.hidden, job["seed"], **self.pretrain)
            payload = {"kind": "pretrained-classifier", "state": net.state_dict(), "history": history, "job": job}
            folder.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, payload)
        history = payload["history"]
        rows = []
        for k in SHOTS:
            distribution, batch = self.test(job["split"], k)
            names = distribution.sampler.class_names
            started = time.perf_counter()
            out = transfer_and_score(net, batch, self.head["record"], self.head["lr"])
            seconds = (time.perf_counter() - started) / 2  # the features are shared; each method gets half
            for method, key, steps in (
                ("Transfer (new head)", "head", list(self.head["record"])),
                ("Nearest class mean", "ncm", [0]),
            ):
                acc, pred = out[key]
                row = self._row(
                    method,
                    job["split"],
                    k,
                    job["seed"],
                    score(acc, steps, pred, batch, names),
                    acc,
                    started,
                    train_seconds=history[-1]["seconds"],
                    epochs=len(history),
                    val_curve=[[r["epoch"], r["val_accuracy"]] for r in history],
                    key=folder.name,
                )
                row["test_seconds"] = round(seconds, 1)
                rows.append(row)
        return rows

    def _run_scratch(self, job, folder) -> list[dict[str, Any]]:
        distribution, batch = self.test(job["split"], job["k_shot"])
        started = time.perf_counter()
        acc, pred = scratch_and_score(batch, self.hidden, job["seed"], self.scratch["record"], self.scratch["lr"])
        scored = score(acc, list(self.scratch["record"]), pred, batch, distribution.sampler.class_names)
        folder.mkdir(parents=True, exist_ok=True)
        return [
            self._row(
                job["method"],
                job["split"],
                job["k_shot"],
                job["seed"],
                scored,
                acc,
                started,
                train_seconds=0.0,
                key=folder.name,
            )
        ]


def _label(job: dict[str, Any]) -> str:
    where = f"split {job['split']} " if "split" in job else ""
    shots = f"{job['k_shot']}-shot " if "k_shot" in job else ""
    return f"{job['method']} {where}{shots}seed {job['seed']}"


def medical(
    small: bool = False,
    iterations: int | None = None,
    progress: bool = True,
    trained_only: bool = False,
    time_limit: float | None = None,
) -> dict[str, Any]:
    """Every job of the plan, run (or read from the cache) in order of priority.

    `trained_only` runs nothing: the result holds the finished jobs and lists the rest under
    `missing`. No job starts after `time_limit` seconds; those not started are listed as missing.
    """
    study = Study(small, iterations, progress)
    deadline = time.perf_counter() + (time_limit if time_limit is not None else float("inf"))
    runs, missing, core_seconds = [], [], 0.0
    jobs = study.plan()
    for number, job in enumerate(jobs, 1):
        done = study.results_path(job).exists()
        if not done and (trained_only or time.perf_counter() > deadline):
            missing.append({**job, "key": study.folder(job).name})
            continue
        started = time.perf_counter()
        rows = study.run(job, rescore=not trained_only and time.perf_counter() <= deadline)
        runs += rows
        # a job trains once (its rows share the training time) and scores each row's tasks
        core_seconds += rows[0]["train_seconds"] + sum(r["test_seconds"] for r in rows)
        if progress and not done:
            summary = ", ".join(
                f"{r['method']} {r['k_shot']}-shot split {r['split']} {100 * r['accuracy']:.1f}%" for r in rows
            )
            print(
                f"[{number}/{len(jobs)}] {_label(job)}: {summary} ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    example = meta_config("maml", 1, 1, 0, study.variant, small, iterations)
    return {
        "settings": {
            "n_way": N_WAY,
            "k_query": K_QUERY,
            "shots": list(SHOTS),
            "seeds": list(study.seeds),
            "seeded_methods": list(SEEDED),
            "iterations": example.iterations,
            "preset_iterations": PRESETS[PRESET[1]]["cpu"]["iterations"],
            "meta_batch": example.meta_batch,
            "inner_lr": example.inner_lr,
            "inner_steps": example.inner_steps,
            "hidden": study.hidden,
            "test_tasks": study.tasks,
            "test_steps": study.steps,
            "test_seed": TEST_SEED,
            "pretrain": study.pretrain,
            "head": {**study.head, "record": list(study.head["record"])},
            "scratch": {**study.scratch, "record": list(study.scratch["record"])},
            "splits": {str(s): {**split_classes(s), "name": SPLIT_NAMES[s]} for s in SPLIT_IDS},
            "data": {
                "variant": study.variant,
                "images": len(study.files.paths),
                "per_class": study.files.counts(),
                "left_out": [list(pair) for pair in study.files.left_out],
                "source": CITATION,
                "doi": DOI_URL,
                "license": LICENSE,
            },
        },
        "budget": (
            f"meta-iterations cut from the presets' {PRESETS[PRESET[1]]['cpu']['iterations']} to "
            f"{example.iterations} for every meta-trained model, to fit about 60 core-minutes of one CPU; "
            f"{len(study.seeds)} seeds for {', '.join(SEEDED)}, seed {study.seeds[0]} for the others"
        ),
        "cost": {"jobs_finished": len(jobs) - len(missing), "jobs": len(jobs), "core_seconds": round(core_seconds)},
        "reading": (
            "table cells: the mean over seeds and [low, high], the envelope of every seed's 95% interval over the "
            "test tasks (seed_ci95: Student's t over seeds, for the record); comparisons: MAML 'better' or "
            "'worse' only where the two envelopes separate, else 'tie'"
        ),
        "complete_with": (
            "mamlbook study medical (trains and scores only the jobs under missing; the cache keeps the rest)"
            if missing
            else None
        ),
        "methods": METHODS,
        "runs": runs,
        "missing": missing,
        "table": table(runs),
        "comparisons": comparisons(table(runs)),
    }


# ----- reading a result -----
def table(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """`table[method]["split S, K-shot"]`: the mean accuracy over seeds and `[low, high]`, the envelope of
    every seed's 95% interval over the test tasks.

    One seed's interval measures the luck of the test tasks; the envelope adds what retraining with
    another seed changes, without a Student's t over two or three seeds, which is wider than the data
    (for two seeds, 12.7 standard errors). `seed_ci95` keeps that t interval for the record.
    """
    cells: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["method"], run["split"], run["k_shot"]), []).append(run)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (method, split_id, k), rs in sorted(cells.items(), key=lambda item: list(METHODS).index(item[0][0])):
        rs = sorted(rs, key=lambda r: r["seed"])
        values = [r["accuracy"] for r in rs]
        mean, seed_half = seed_interval(values)
        out.setdefault(method, {})[cell_name(split_id, k)] = {
            "accuracy": mean,
            "low": min(r["accuracy"] - r["accuracy_ci95"] for r in rs),
            "high": max(r["accuracy"] + r["accuracy_ci95"] for r in rs),
            "seeds": [r["seed"] for r in rs],
            "by_seed": values,
            "task_ci95_by_seed": [r["accuracy_ci95"] for r in rs],
            "seed_ci95": seed_half,
            "spread": max(values) - min(values),
            "train_seconds": sum(r["train_seconds"] for r in rs) / len(rs),
            "test_seconds": sum(r["test_seconds"] for r in rs) / len(rs),
        }
    return out


def cell_name(split_id: int, k_shot: int) -> str:
    return f"split {split_id}, {k_shot}-shot"


def comparisons(tab: dict[str, dict[str, dict[str, Any]]], reference: str = "MAML") -> list[dict[str, Any]]:
    """`reference` against every other method, cell by cell: the gap between the means over seeds, and
    whether the two envelopes of intervals separate ("better", "worse" for `reference`, else "tie")."""
    rows = []
    for method, cells in tab.items():
        if method == reference:
            continue
        for name, cell in cells.items():
            if name not in tab.get(reference, {}):
                continue
            ref = tab[reference][name]
            gap = ref["accuracy"] - cell["accuracy"]
            # apart only if every seed of one lies above every seed of the other, each with its task interval
            verdict = "better" if ref["low"] > cell["high"] else "worse" if ref["high"] < cell["low"] else "tie"
            apart = verdict != "tie"
            rows.append({"cell": name, "method": method, "gap": gap, "separate": apart, "reference": verdict})
    return rows
