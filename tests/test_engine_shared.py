"""The shared-weight prefix (ANIL's body) as one plain batch: same values and gradients as per task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import image_batch

from mamlbook import meta_gradient
from mamlbook.engine.chain import fold_input, trace_chain
from mamlbook.engine.folded import expand_params, folded_forward
from mamlbook.engine.shared import per_task_batch_norm, shared_forward
from mamlbook.meta import Subset
from mamlbook.meta.rules import SGD
from mamlbook.models import Conv4


def relative(a: dict, b: dict) -> float:
    num = sum(((a[k] - b[k]) ** 2).sum() for k in a).sqrt()
    return float(num / sum((a[k] ** 2).sum() for k in a).sqrt())


def test_each_task_is_normalized_by_its_own_statistics():
    bn = torch.nn.BatchNorm2d(3, track_running_stats=False).double()
    weight, bias = torch.rand(3, dtype=torch.float64) + 0.5, torch.rand(3, dtype=torch.float64)
    x = torch.randn(4 * 5, 3, 6, 6, dtype=torch.float64) * torch.arange(1, 21, dtype=torch.float64).view(-1, 1, 1, 1)
    out = per_task_batch_norm(x, 4, bn, weight, bias)
    for t in range(4):
        rows = slice(5 * t, 5 * t + 5)
        expected = F.batch_norm(x[rows], None, None, weight, bias, training=True, eps=bn.eps)
        torch.testing.assert_close(out[rows], expected, rtol=1e-12, atol=1e-12)
    whole = F.batch_norm(x, None, None, weight, bias, training=True, eps=bn.eps)
    assert not torch.allclose(out, whole), "statistics over the whole batch would mix tasks"


def eval_chain() -> torch.nn.Module:
    """A scored model: batch norm with running statistics, in evaluation mode."""
    bn = torch.nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    layers = [torch.nn.Conv2d(1, 4, 3, padding=1), bn, torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(4 * 8 * 8, 3)).double().eval()


@pytest.mark.parametrize("chunk", [1, 2, 3])
@pytest.mark.parametrize("make", [lambda: Conv4(n_way=3, hidden=4, image_size=16).double(), eval_chain])
def test_the_body_in_plain_chunks_equals_the_folded_body(make, chunk: int):
    torch.manual_seed(0)
    model = make()
    params, batch = dict(model.named_parameters()), image_batch(tasks=3)
    body = trace_chain(model)[:-1]
    grouped = folded_forward(model, expand_params(params, 3), fold_input(batch.query_x), 3, body)
    plain = shared_forward(params, batch.query_x, body, tasks_per_chunk=chunk)
    torch.testing.assert_close(plain, grouped, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [2, 1])
def test_adapting_the_last_block_and_head_matches_the_loop(order: int):
    """A prefix that ends on image features ([N, B*C, H, W]), not ANIL's flat ones."""
    torch.manual_seed(1)
    model = Conv4(n_way=3, hidden=4, image_size=16).double()
    params, batch = dict(model.named_parameters()), image_batch(tasks=2)
    names = [k for k in params if k.startswith(("body.3.", "head."))]
    rule = Subset(SGD(0.3), names)
    _, ref = meta_gradient(model, params, batch, "ce", 2, 0.3, order, "loop", rule)
    _, new = meta_gradient(model, params, batch, "ce", 2, 0.3, order, "folded", rule)
    assert relative(ref, new) < 1e-8
    assert float(new["body.0.0.weight"].abs().sum()) > 0, "the shared prefix still receives its gradient"
