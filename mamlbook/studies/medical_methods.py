"""The methods the medical study compares, each as a function from trained weights and test tasks to scores.

`mamlbook.studies.medical` plans the jobs, caches them and assembles the result; this module holds
what each method does to a task: MAML-style adaptation, prototypes, heads fitted on frozen features
(a linear head, Chen et al. 2019's "Baseline"; a cosine head, their "Baseline++"), nearest class
mean, training from scratch on the shots, and the raw-pixel floor that learns nothing.

Per-task accuracies come back as `[B, R]` tensors (R recorded steps) with the predictions `[B, N*Q]`
at the last recorded step, in the order of the study's shared test tasks.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from ..functional import forward
from ..meta import Shifted, adapt
from ..meta.mamlpp import at_step
from ..meta.prototypes import embed, prototype_logits
from ..models import Conv4
from ..tasks import TaskBatch
from ..tasks.pbc import PBC, grayscale
from ..train.convergence import plateau
from ..train.evaluate import mean_ci95

# Baseline++ (Chen et al. 2019) scores a class by the cosine between features and its weight vector,
# times a scale and a learned norm per class. Their code fixes the scale at 2 for up to 200 classes;
# with 3 to 5 classes a logit range of about +-2 keeps the softmax near uniform (in a pilot on split 2
# the pre-training stalled at 79% held-out accuracy against the linear head's 89%), so the scale here
# is 10, the value Gidaris and Komodakis (2018) start their learned cosine-classifier scale from.
COSINE_SCALE = 10.0


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
    """Adapt to each task by 0 to `steps` inner steps (the model's own rule); per-task query accuracy `[B, steps+1]`
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


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random flips, quarter turns and brightness/contrast jitter of `x: [M, C, H, W]` in [0, 1].

    A blood cell has no up, down, left or right, so every flip and turn is a valid view of it; the
    jitter (factors in [0.6, 1.4], Chen et al.'s 0.4) stands for differences in staining and lighting.
    """
    m = len(x)
    flip_h = torch.rand(m, generator=generator) < 0.5
    flip_v = torch.rand(m, generator=generator) < 0.5
    turns = int(torch.randint(0, 4, (), generator=generator))  # one quarter turn for the whole batch
    x = torch.where(flip_h.view(-1, 1, 1, 1), x.flip(-1), x)
    x = torch.where(flip_v.view(-1, 1, 1, 1), x.flip(-2), x)
    x = torch.rot90(x, turns, dims=(-2, -1))
    brightness = 0.6 + 0.8 * torch.rand(m, 1, 1, 1, generator=generator)
    contrast = 0.6 + 0.8 * torch.rand(m, 1, 1, 1, generator=generator)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean * brightness).clamp(0, 1)


def cosine_logits(features: Tensor, weight: Tensor, gain: Tensor) -> Tensor:
    """Baseline++'s head: `COSINE_SCALE * gain_k * cos(features, weight_k)`; `features: [..., M, D]`,
    `weight: [..., D, N]`, `gain: [..., 1, N]`."""
    return COSINE_SCALE * gain * (F.normalize(features, dim=-1) @ F.normalize(weight, dim=-2))


def pretrain_classifier(
    tasks: PBC,
    hidden: int,
    seed: int,
    batch_size: int,
    lr: float,
    epochs: int,
    min_epochs: int,
    min_points: int = 5,
    head: str = "linear",
    augmented: bool = False,
    size: int = 28,
):
    """Conv4 as a plain classifier of the meta-training types (every image of theirs), Adam on cross-entropy,
    until the held-out images' accuracy stops improving (`train.convergence.plateau` with windows of at
    least `min_points` epochs, checked every epoch from `min_epochs` on) or `epochs` epochs.

    `head="cosine"` trains Baseline++'s cosine head (`cosine_logits` with the network's head weights);
    `augmented` draws a new `augment` view of every image each epoch. Returns the network and its
    history (train loss, held-out accuracy and process CPU seconds per epoch).
    """
    if head not in ("linear", "cosine"):
        raise ValueError(f"head must be 'linear' or 'cosine', got {head!r}")
    train, val = tasks.for_split("train").sampler, tasks.for_split("val").sampler

    def examples(sampler):
        keep = torch.isin(sampler.labels, sampler.classes)
        labels = (sampler.labels[keep].unsqueeze(1) == sampler.classes).float().argmax(1)  # ids -> 0..N-1
        return _channels_last(sampler.images[keep].float() / 255), labels

    x, y = examples(train)
    vx, vy = examples(val)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Conv4(len(train.classes), x.shape[1], hidden, image_size=size).to(memory_format=torch.channels_last)
    gain = torch.nn.Parameter(net.head.weight.detach().norm(dim=1).view(1, -1).clone())  # weight-norm's g

    def logits(images: Tensor) -> Tensor:
        if head == "linear":
            return net(images)
        return cosine_logits(net.body(images), net.head.weight.T, gain)

    optimizer = torch.optim.Adam([*net.parameters(), *([gain] if head == "cosine" else [])], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history, started = [], time.process_time()
    for epoch in range(1, epochs + 1):
        order, losses = torch.randperm(len(y), generator=generator), []
        for start in range(0, len(y), batch_size):
            rows = order[start : start + batch_size]
            images = augment(x[rows], generator) if augmented else x[rows]
            loss = F.cross_entropy(logits(images), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            val_acc = (logits(vx).argmax(1) == vy).float().mean().item()
        history.append(
            {
                "epoch": epoch,
                "train_loss": sum(losses) / len(losses),
                "val_accuracy": val_acc,
                "cpu_seconds": round(time.process_time() - started, 3),
            }
        )
        if epoch >= min_epochs and plateau([h["val_accuracy"] for h in history], min_points=min_points).converged:
            break
    return net, gain.detach(), history


def frozen_features(net: Conv4, batch: TaskBatch) -> tuple[Tensor, Tensor]:
    """Body features of each task's support and query images `([B, S, D], [B, Q, D])`; a task's images go
    through the frozen body together (batch statistics of the whole task)."""
    n_support = batch.support_x.shape[1]
    sx, qx = _channels_last(batch.support_x), _channels_last(batch.query_x)
    with torch.no_grad():
        feats = torch.stack([net.body(torch.cat([sx[i], qx[i]])) for i in range(len(batch))])
    return feats[:, :n_support], feats[:, n_support:]


def nearest_class_mean(support: Tensor, support_y: Tensor, query: Tensor, query_y: Tensor):
    """Each query to the class whose shots' mean is closest (Euclidean): `(acc [B, 1], predictions [B, Q])`."""
    n_way = int(support_y.max()) + 1
    onehot = F.one_hot(support_y, n_way).to(support.dtype)  # [B, S, N]
    means = onehot.transpose(1, 2) @ support / onehot.sum(1).unsqueeze(-1)  # [B, N, D]
    pred = torch.cdist(query, means).argmin(-1)
    return (pred == query_y).float().mean(1, keepdim=True), pred


def fit_heads(
    support: Tensor,
    support_y: Tensor,
    query: Tensor,
    query_y: Tensor,
    record: tuple[int, ...],
    lr: float,
    head: str = "linear",
    seed: int = 0,
):
    """A new head per task on fixed features, fitted to the shots by full-batch Adam; query accuracy at
    the `record` steps `[B, R]` and the last predictions. All tasks at once: Adam is elementwise, so
    summing the tasks' losses keeps them apart. `head="linear"` starts at zero; `"cosine"` (Baseline++)
    starts from small random directions (a cosine of a zero vector is undefined) with unit gains."""
    b, d = support.shape[0], support.shape[-1]
    n_way = int(support_y.max()) + 1
    if head == "linear":
        weight = torch.zeros(b, d, n_way, requires_grad=True)
        extra = torch.zeros(b, 1, n_way, requires_grad=True)  # the bias
    elif head == "cosine":
        generator = torch.Generator().manual_seed(seed)
        weight = (torch.randn(b, d, n_way, generator=generator) / math.sqrt(d)).requires_grad_()
        extra = torch.ones(b, 1, n_way, requires_grad=True)  # the learned norms
    else:
        raise ValueError(f"head must be 'linear' or 'cosine', got {head!r}")

    def logits(features: Tensor) -> Tensor:
        return features @ weight + extra if head == "linear" else cosine_logits(features, weight, extra)

    optimizer = torch.optim.Adam([weight, extra], lr=lr)
    accs = []
    n_support = support.shape[1]
    for step in range(max(record) + 1):
        if step in record:
            with torch.no_grad():
                pred = logits(query).argmax(-1)
            accs.append((pred == query_y).float().mean(1))
        if step == max(record):
            break
        loss = F.cross_entropy(logits(support).flatten(0, 1), support_y.flatten(), reduction="sum") / n_support
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.stack(accs, 1), pred


def transfer_and_score(net: Conv4, batch: TaskBatch, record: tuple[int, ...], lr: float, head: str = "linear"):
    """The frozen body's features, then a new head fitted to the K shots (`fit_heads`) and nearest class
    mean. Returns {"head": (acc [B, R], predictions), "ncm": (acc [B, 1], predictions)}."""
    support, query = frozen_features(net, batch)
    return {
        "head": fit_heads(support, batch.support_y, query, batch.query_y, record, lr, head),
        "ncm": nearest_class_mean(support, batch.support_y, query, batch.query_y),
    }


def prototype_scores(model, params, batch: TaskBatch):
    """A prototypical network on each task: the query's nearest prototype (squared Euclidean distance) of
    the embedded shots, support and query embedded together. `(acc [B, 1], predictions [B, Q])`."""
    params = {k: _channels_last(v.detach()) for k, v in params.items()}
    sx, qx = _channels_last(batch.support_x), _channels_last(batch.query_x)
    n_support, n_way = sx.shape[1], int(batch.support_y.max()) + 1
    predictions = []
    with torch.no_grad():
        for i in range(len(batch)):
            feats = embed(model, params, torch.cat([sx[i], qx[i]]))
            onehot = F.one_hot(batch.support_y[i], n_way).to(feats.dtype)
            centres = onehot.T @ feats[:n_support] / onehot.sum(0).unsqueeze(1)
            predictions.append(prototype_logits(feats[n_support:], centres).argmax(-1))
    pred = torch.stack(predictions)
    return (pred == batch.query_y).float().mean(1, keepdim=True), pred


def raw_pixel_floor(batch: TaskBatch, record: tuple[int, ...], lr: float):
    """The floor that learns nothing across tasks: nearest class mean and a logistic regression (a linear
    head fitted by `fit_heads`) on the raw pixels of the same crop and size.
    Returns {"ncm": (acc [B, 1], predictions), "logistic": (acc [B, R], predictions)}."""
    support, query = batch.support_x.flatten(2), batch.query_x.flatten(2)
    return {
        "ncm": nearest_class_mean(support, batch.support_y, query, batch.query_y),
        "logistic": fit_heads(support, batch.support_y, query, batch.query_y, record, lr, "linear"),
    }


def scratch_and_score(batch: TaskBatch, hidden: int, seed: int, record: tuple[int, ...], lr: float):
    """Conv4 from the same random weights for every task, trained by Adam on the K shots; query accuracy at `record`."""
    channels = batch.support_x.shape[2]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        size = batch.support_x.shape[-1]
        net = Conv4(int(batch.support_y.max()) + 1, channels, hidden, image_size=size).to(
            memory_format=torch.channels_last
        )
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
