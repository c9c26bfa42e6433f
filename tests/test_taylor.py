"""The second-order expansion of MAML, FOMAML and Reptile (Nichol et al. 2018, section 5)."""

import pytest
import torch

import mamlbook as mb
from mamlbook.meta.taylor import ALGORITHMS, exact_update, smooth_copy, taylor_check, taylor_terms

ALPHAS = torch.logspace(-2, -4, 5).tolist()


@pytest.fixture
def smooth_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return smooth_copy(mb.SineMLP(hidden=(16, 16)).double())


def minibatches(batch: mb.TaskBatch, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """k minibatches of task 0: the support set split into k - 1 parts, then the query set."""
    xs, ys = batch.support_x[0].chunk(k - 1), batch.support_y[0].chunk(k - 1)
    return [*zip(xs, ys, strict=True), (batch.query_x[0], batch.query_y[0])]


def test_smooth_copy_swaps_every_relu_and_keeps_the_parameters(sine_model64):
    smooth = smooth_copy(sine_model64)
    assert not any(isinstance(m, torch.nn.ReLU) for m in smooth.modules())
    assert any(isinstance(m, torch.nn.ReLU) for m in sine_model64.modules())  # the original is untouched
    assert mb.params_of(smooth).keys() == mb.params_of(sine_model64).keys()


@pytest.mark.parametrize("k", [2, 3])
def test_the_remainder_shrinks_like_alpha_squared(smooth_model, sine_batch64, k):
    check = taylor_check(smooth_model, mb.params_of(smooth_model), minibatches(sine_batch64, k), ALPHAS)
    for algorithm in ALGORITHMS:
        assert check.slope(check.remainder[algorithm]) == pytest.approx(2, abs=0.2), algorithm
        # Without its order-alpha term an expansion is only first-order accurate.
        assert check.slope(check.leading[algorithm]) == pytest.approx(1, abs=0.2), algorithm
    # FOMAML's prediction misses MAML's H_j g_k terms: the error stays of order alpha.
    assert check.slope(check.maml_as_fomaml) == pytest.approx(1, abs=0.2)


def test_the_three_predictions_differ_by_more_than_their_remainders(smooth_model, sine_batch64):
    theta = mb.params_of(smooth_model)
    batches = minibatches(sine_batch64, 2)
    terms = taylor_terms(smooth_model, theta, batches)
    alpha = ALPHAS[-1]
    predictions = {a: terms.predict(a, alpha) for a in ALGORITHMS}
    remainders = [(exact_update(smooth_model, theta, batches, a, alpha) - predictions[a]).norm() for a in ALGORITHMS]
    for a in ALGORITHMS:
        for b in ALGORITHMS:
            if a < b:
                assert (predictions[a] - predictions[b]).norm() > 100 * max(remainders), (a, b)


def test_two_minibatch_terms_are_the_ones_of_the_paper(smooth_model, sine_batch64):
    """k = 2: MAML has H_B g_A + H_A g_B, FOMAML and Reptile only H_B g_A; Reptile adds g_A."""
    terms = taylor_terms(smooth_model, mb.params_of(smooth_model), minibatches(sine_batch64, 2))
    (g_a, g_b), hb_ga, ha_gb = terms.grads, terms.hvp[1][0], terms.hvp[0][1]
    torch.testing.assert_close(terms.first_order("maml"), hb_ga + ha_gb)
    torch.testing.assert_close(terms.first_order("fomaml"), hb_ga)
    torch.testing.assert_close(terms.first_order("reptile"), hb_ga)
    torch.testing.assert_close(terms.leading("reptile"), g_a + g_b)
    torch.testing.assert_close(terms.leading("maml"), g_b)


def test_fomaml_expansion_is_exact_for_a_quadratic_loss(sine_batch64):
    """Linear regression has a constant Hessian: g_B(theta - alpha g_A) = g_B - alpha H g_A exactly."""
    model = mb.LinearModel().double()
    theta = mb.params_of(model)
    batches = minibatches(sine_batch64, 2)
    terms = taylor_terms(model, theta, batches)
    for alpha in (0.3, 0.01):
        torch.testing.assert_close(exact_update(model, theta, batches, "fomaml", alpha), terms.predict("fomaml", alpha))
        torch.testing.assert_close(
            exact_update(model, theta, batches, "reptile", alpha), terms.predict("reptile", alpha)
        )


def test_exact_maml_is_the_package_meta_gradient(smooth_model, sine_batch64):
    theta = mb.params_of(smooth_model)
    one = sine_batch64[0:1]
    _, grads = mb.meta_gradient(smooth_model, theta, one, "mse", 1, 0.05, order=2)
    want = torch.cat([g.reshape(-1) for g in grads.values()])
    torch.testing.assert_close(exact_update(smooth_model, theta, minibatches(one, 2), "maml", 0.05), want)


def test_bad_arguments_are_refused(smooth_model, sine_batch64):
    theta = mb.params_of(smooth_model)
    with pytest.raises(ValueError, match="algorithm"):
        exact_update(smooth_model, theta, minibatches(sine_batch64, 2), "anil", 0.1)
    with pytest.raises(ValueError, match="two minibatches"):
        taylor_terms(smooth_model, theta, minibatches(sine_batch64, 2)[:1])
