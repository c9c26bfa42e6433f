"""ANIL through the folded engine: the body runs once, the meta-gradient is the loop's."""

from __future__ import annotations

import pytest
import torch
from conftest import image_batch

from mamlbook import meta_gradient
from mamlbook.engine.chain import trace_chain
from mamlbook.engine.folded import frozen_prefix
from mamlbook.meta.anil import anil_rule, head_names
from mamlbook.models import Conv4


def relative(a: dict, b: dict) -> float:
    num = sum(((a[k] - b[k]) ** 2).sum() for k in a).sqrt()
    return float(num / sum((a[k] ** 2).sum() for k in a).sqrt())


@pytest.mark.parametrize("order", [2, 1])
@pytest.mark.parametrize("steps", [1, 3])
def test_anil_matches_loop(order: int, steps: int) -> None:
    torch.manual_seed(0)
    model = Conv4(n_way=3, hidden=4, image_size=16).double()
    params, batch = dict(model.named_parameters()), image_batch()
    rule = anil_rule(model, 0.4)
    _, ref = meta_gradient(model, params, batch, "ce", steps, 0.4, order, "loop", rule)
    _, new = meta_gradient(model, params, batch, "ce", steps, 0.4, order, "folded", rule)
    assert relative(ref, new) < 1e-8
    # The body still learns (through the features), and at second order through the head's adaptation.
    assert float(new["body.0.0.weight"].abs().sum()) > 0


def test_head_defaults_to_the_last_layer() -> None:
    from mamlbook.models import SineMLP

    assert sorted(anil_rule(SineMLP(), 0.01).names) == ["net.4.bias", "net.4.weight"]
    assert sorted(anil_rule(Conv4(hidden=4, image_size=16), 0.4).names) == ["head.bias", "head.weight"]


def test_body_is_a_frozen_prefix() -> None:
    model = Conv4(hidden=4, image_size=16)
    params = dict(model.named_parameters())
    layers = trace_chain(model)
    assert frozen_prefix(layers, params, head_names(params)) == len(layers) - 1
    assert frozen_prefix(layers, params, list(params)) == 0
    with pytest.raises(ValueError, match="no parameters under"):
        head_names(params, "classifier")
