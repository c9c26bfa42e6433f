"""Algorithms by name through the Trainer: each trains, ANIL spares the body, resume stays exact."""

import pytest
import torch

import mamlbook as mb
from mamlbook.models import Conv4
from mamlbook.train.algorithms import ALGORITHMS, MAMLPP_PIECES, head_names, make_algorithm
from mamlbook.train.checkpoint import load_checkpoint


def small_config(**overrides):
    values = {"iterations": 4, "meta_batch": 3, "eval_every": 2, "eval_tasks": 4, "checkpoint_every": 2, "seed": 3}
    return mb.TrainConfig(**{**values, **overrides})


PROTOTYPES = [n for n, a in ALGORITHMS.items() if a.prototypes or a.prototype_head]


@pytest.mark.parametrize("name", [n for n in ALGORITHMS if n not in PROTOTYPES])
def test_every_algorithm_trains_through_the_trainer(name):
    trainer = mb.Trainer(small_config(algorithm=name, inner_steps=2))
    start = {k: v.detach().clone() for k, v in trainer.params.items()}
    history = trainer.fit(progress=False)
    assert all(torch.isfinite(torch.tensor(r["val_loss_post"])) for r in history)
    assert any(not torch.equal(start[k], trainer.params[k]) for k in start)


@pytest.mark.parametrize("name", PROTOTYPES)
def test_prototype_algorithms_refuse_a_regression_network_without_a_body(name):
    """ProtoNets and ProtoMAML embed with `model.body` (tests/test_prototypes.py trains them)."""
    with pytest.raises(ValueError, match="has none: give it a `body`"):
        mb.Trainer(small_config(algorithm=name, inner_steps=2))


def test_default_algorithm_is_plain_maml():
    assert mb.TrainConfig().algorithm == "maml"
    plain, named = mb.Trainer(small_config()), mb.Trainer(small_config(algorithm="maml"))
    plain.fit(progress=False)
    named.fit(progress=False)
    assert all(torch.equal(plain.params[k], named.params[k]) for k in plain.params)


def test_anil_leaves_the_body_untouched_in_the_inner_loop(sine_model64, sine_batch64):
    algorithm = make_algorithm("anil")
    theta = mb.params_of(sine_model64)
    rule = algorithm.make_rule(sine_model64, theta, 0.1, 2)
    assert head_names(sine_model64, theta) == ["net.4.weight", "net.4.bias"]
    sx, sy = sine_batch64.support_x[0], sine_batch64.support_y[0]
    adapted = mb.adapt(sine_model64, theta, sx, sy, "mse", 2, rule=rule)
    for k in ("net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"):
        assert adapted[k] is theta[k]
    assert not torch.equal(adapted["net.4.weight"], theta["net.4.weight"])
    _, grads = mb.meta_gradient(sine_model64, theta, sine_batch64, "mse", 2, 0.1, rule=rule)
    assert grads["net.0.weight"].abs().sum() > 0  # the body is still meta-learned in the outer loop


def test_anil_takes_conv4s_head():
    model = Conv4(n_way=3, hidden=4, image_size=16)
    assert head_names(model, mb.params_of(model)) == ["head.weight", "head.bias"]


def test_metasgd_rates_are_trained_and_saved(tmp_path):
    trainer = mb.Trainer(small_config(algorithm="metasgd"), tmp_path)
    trainer.fit(progress=False)
    rates = trainer.rates
    assert set(rates) == set(trainer.params)
    assert all(not torch.all(r == 0.01) for r in rates.values())
    saved = load_checkpoint(tmp_path)
    assert all(torch.equal(saved["rates"][k], rates[k].detach()) for k in rates)
    assert saved["kind"] == "metasgd"


@pytest.mark.parametrize(
    "name, options",
    [
        ("metasgd", {}),
        ("mamlpp", {"msl_iterations": 4, "first_order_iterations": 3, "cosine_iterations": 6}),
        ("reptile", {}),
    ],
)
def test_resumed_run_equals_uninterrupted_run(tmp_path, name, options):
    overrides = {"algorithm": name, "algorithm_options": options, "inner_steps": 2, "iterations": 6}
    straight = mb.Trainer(small_config(**overrides), tmp_path / "straight")
    straight.fit(progress=False)
    first = mb.Trainer(small_config(**{**overrides, "iterations": 3}), tmp_path / "split")
    first.fit(progress=False)
    resumed = mb.Trainer.resume(tmp_path / "split", iterations=6)
    resumed.fit(progress=False)
    for k in straight.params:
        assert torch.equal(straight.params[k], resumed.params[k]), k
    for k in straight.rates:
        assert torch.equal(straight.rates[k], resumed.rates[k]), k
    assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]


def test_per_step_bn_statistics_survive_a_checkpoint(tmp_path):
    config = small_config(algorithm="mamlpp", model="conv4", model_options={"n_way": 3, "hidden": 4, "image_size": 16})
    trainer = mb.Trainer(config, tmp_path)
    bn = trainer.model.body[0][1]
    with torch.no_grad():
        bn.running_mean.uniform_()
    trainer.save()
    restored = mb.Trainer.resume(tmp_path)
    assert torch.equal(restored.model.body[0][1].running_mean, bn.running_mean)
    assert restored.params["body.0.1.weight"].shape == (config.inner_steps, 4)


def test_ablation_switches_one_piece_off_at_a_time():
    full = make_algorithm("mamlpp")
    for piece, off in MAMLPP_PIECES.items():
        variant = make_algorithm("mamlpp", **off)
        changed = [
            f
            for f in ("msl", "da", "bn_stats", "bn_weights", "rule", "cosine")
            if getattr(variant, f) != getattr(full, f)
        ]
        assert len(changed) == 1, (piece, changed)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"algorithm": "nope"}, "unknown algorithm 'nope'"),
        ({"algorithm": "maml", "algorithm_options": {"speed": 2}}, "unknown options"),
        ({"algorithm": "maml", "algorithm_options": {"rule": "adam"}}, "unknown inner rule"),
        ({"algorithm": "reptile", "algorithm_options": {"msl": True}}, "reptile"),
    ],
)
def test_bad_algorithms_are_refused_up_front(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_config(**kwargs)


def test_study_runs_are_cached_by_configuration_and_shared_between_figures(tmp_path, monkeypatch):
    from mamlbook.studies import better as better_study

    rows = better_study.plan("small")
    keys = {(r["group"], r["label"], r["seed"]): better_study.config_key(r["config"], 50) for r in rows}
    base_steps = better_study.SIZES["small"]["base"]["inner_steps"]
    sweep_at_base = next(r for r in rows if r["group"] == "inner_steps" and r["inner_steps"] == base_steps)
    assert better_study.config_key(sweep_at_base["config"], 50) == keys[("methods", sweep_at_base["label"], 0)]
    assert len(set(keys.values())) < len(rows)  # shared runs train once

    calls = []
    run = {"x": 1, "per_task": [0.5, 0.25]}
    monkeypatch.setattr(better_study, "train_and_test", lambda config, n: calls.append(config.seed) or run)
    config = rows[0]["config"]
    first, hit_first = better_study.cached_run(config, 50, tmp_path)
    again, hit_again = better_study.cached_run(config, 50, tmp_path)
    assert (hit_first, hit_again, calls, first, again) == (False, True, [config.seed], run, run)
    # An entry from before runs kept per-task scores is trained again, not read.
    (tmp_path / f"{better_study.config_key(config, 50)}.json").write_text('{"x": 1}')
    assert better_study.cached_run(config, 50, tmp_path) == (run, False) and len(calls) == 2
    other = mb.TrainConfig.from_dict({**config.to_dict(), "seed": 99})
    assert better_study.config_key(other, 50) != better_study.config_key(config, 50)
