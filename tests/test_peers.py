"""learn2learn and higher as oracles: same weights, same tasks, same meta-gradient."""

import pytest
import torch
from conftest import image_batch, relative_error

import mamlbook as mb
from mamlbook.bench.peers import higher_meta_gradient, learn2learn_meta_gradient, model_with, torchopt_meta_gradient
from mamlbook.models import Conv4

pytest.importorskip("learn2learn", reason="the comparison peer learn2learn is not installed (make venv)")
pytest.importorskip("higher", reason="the comparison peer higher is not installed (make venv)")
pytest.importorskip("torchopt", reason="the comparison peer torchopt is not installed (make venv)")
pytestmark = [pytest.mark.peers, pytest.mark.filterwarnings("ignore::UserWarning")]

PEERS = {"learn2learn": learn2learn_meta_gradient, "higher": higher_meta_gradient}


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("order", [2, 1])
@pytest.mark.parametrize("steps", [1, 3])
def test_meta_gradient_matches_peer_on_sine_mlp(peer, order, steps):
    torch.manual_seed(0)
    model = mb.SineMLP()
    theta = mb.params_of(model)
    batch = mb.Sinusoid(k_shot=10).sample(6, torch.Generator().manual_seed(2))
    ours_loss, ours = mb.meta_gradient(model, theta, batch, "mse", steps, 0.01, order, "vmap")
    peer_loss, theirs = PEERS[peer](model_with(model, theta), batch, "mse", steps, 0.01, order)
    assert ours_loss.item() == pytest.approx(peer_loss, rel=1e-5)
    assert relative_error(ours, theirs) < 1e-5


def test_peer_first_order_really_differs_from_second_order():
    # Guards the oracle itself: if a peer ignored `order`, the tests above would compare nothing.
    torch.manual_seed(0)
    model = mb.SineMLP().double()
    batch = mb.Sinusoid(k_shot=10).sample(4, torch.Generator().manual_seed(2)).to(dtype=torch.float64)
    _, second = learn2learn_meta_gradient(model_with(model, mb.params_of(model)), batch, "mse", 1, 0.05, 2)
    _, first = learn2learn_meta_gradient(model_with(model, mb.params_of(model)), batch, "mse", 1, 0.05, 1)
    assert relative_error(first, second) > 1e-3


@pytest.mark.parametrize("steps", [1, 3])
def test_meta_gradient_matches_torchopt_on_conv4_with_batch_norm(steps):
    torch.manual_seed(0)
    model = Conv4(n_way=3, hidden=4, image_size=16).double()
    theta = mb.params_of(model)
    batch = image_batch(tasks=3)
    ours_loss, ours = mb.meta_gradient(model, theta, batch, "ce", steps, 0.4, 2, "loop")
    peer_loss, theirs = torchopt_meta_gradient(model_with(model, theta), batch, "ce", steps, 0.4, 2)
    assert ours_loss.item() == pytest.approx(peer_loss, rel=1e-10)
    assert relative_error(ours, theirs) < 1e-8


def test_torchopt_peer_refuses_first_order():
    model = mb.SineMLP()
    batch = mb.Sinusoid(k_shot=5).sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="second-order MAML only"):
        torchopt_meta_gradient(model, batch, "mse", 1, 0.01, 1)
