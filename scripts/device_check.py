"""Before trusting a GPU study: every strategy's meta-gradient on this device against the per-task loop.

Float64, Conv4 with batch norm on real Omniglot tasks, one and two inner steps, orders 1 and 2.
The CPU tests check the same on the CPU; this repeats it where cuDNN's kernels run instead.
Usage: python scripts/device_check.py [device]   (exit 1 if any strategy disagrees beyond 1e-8)
"""

from __future__ import annotations

import sys

import torch

from mamlbook.engine import meta_gradient
from mamlbook.train.presets import preset_config


def relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum(float((a[k] - b[k]).pow(2).sum()) for k in a) ** 0.5
    return num / sum(float(b[k].pow(2).sum()) for k in b) ** 0.5


def main(device: str = "cuda") -> int:
    config = preset_config("omniglot-5w1s", "cpu")
    torch.manual_seed(0)
    model = config.make_model().to(device, torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    batch = config.make_task().sample(4, torch.Generator().manual_seed(1)).to(device, torch.float64)
    worst = 0.0
    for steps in (1, 2):
        for order in (1, 2):
            _, reference = meta_gradient(model, params, batch, "ce", steps, 0.4, order, "loop")
            for strategy in ("folded", "checkpointed"):
                _, grads = meta_gradient(model, params, batch, "ce", steps, 0.4, order, strategy)
                error = relative(grads, reference)
                worst = max(worst, error)
                print(f"{device} steps={steps} order={order} {strategy:12s} vs loop: relative error {error:.2e}")
    print(f"worst {worst:.2e}: {'ok' if worst < 1e-8 else 'DISAGREES'}")
    return 0 if worst < 1e-8 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
