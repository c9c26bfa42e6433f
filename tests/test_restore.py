"""Evaluation adapts like training did: learned rates, per-step batch norm and ANIL's head-only rule."""

import pytest
import torch

from mamlbook.cli import main
from mamlbook.meta.mamlpp import StepBatchNorm
from mamlbook.reports.run import evaluate_run
from mamlbook.train.checkpoint import CheckpointError, load_checkpoint
from mamlbook.train.evaluate import adaptation_curve
from mamlbook.train.restore import restore_run

TRAIN = ["--iterations", "4", "--meta-batch", "4", "--eval-every", "2", "--no-progress", "--baseline-iterations", "0"]


def train(tmp_path, algorithm, *extra):
    out = tmp_path / algorithm
    assert main(["train", "sinusoid", "--algorithm", algorithm, "--out", str(out), *TRAIN, *extra]) == 0
    return out


def test_metasgd_run_is_evaluated_with_its_learned_rates(tmp_path):
    out = train(tmp_path, "metasgd", "--inner-lr", "0.01")
    payload = load_checkpoint(out)
    assert payload["config"]["algorithm"] == "metasgd"
    trained = restore_run(payload)
    assert trained.learned and trained.name == "Meta-SGD"
    for name, rate in trained.rule.learned.items():
        assert torch.equal(rate, payload["rates"][name])
        assert not torch.allclose(rate, torch.full_like(rate, 0.01)), "four Adam steps must move the rates"

    report = evaluate_run(out, tasks=30, steps=2)
    assert list(report["methods"]) == ["Meta-SGD"] and report["methods"]["Meta-SGD"]["inner_lr"] == "learned"
    batch = trained.config.make_task().for_split("test").sample(30, torch.Generator().manual_seed(20_000))
    with_rule = adaptation_curve(trained.model, trained.params, batch, "mse", 2, 1.0, rule=trained.rule)["loss"]
    plain = adaptation_curve(trained.model, trained.params, batch, "mse", 2, 0.01)["loss"]
    mean = report["methods"]["Meta-SGD"]["mean"]
    assert mean == pytest.approx(with_rule.mean(0).tolist(), rel=1e-6)
    assert abs(mean[2] - plain.mean(0)[2].item()) > 1e-6, "plain SGD at inner_lr would score another algorithm"


def test_anil_run_adapts_only_its_head_at_evaluation(tmp_path):
    out = train(tmp_path, "anil")
    trained = restore_run(load_checkpoint(out))
    assert trained.rule is not None and not trained.learned
    grads = {k: torch.ones_like(v) for k, v in trained.params.items()}
    stepped = trained.rule(trained.params, grads, 0)
    moved = {k for k in stepped if not torch.equal(stepped[k], trained.params[k])}
    assert moved and moved < set(trained.params), "ANIL moves the head, never the body"


def test_mamlpp_run_restores_per_step_batch_norm_and_rates(tmp_path):
    out = tmp_path / "mamlpp"
    args = ["train", "omniglot", "--algorithm", "mamlpp", "--model", "conv4", "--k-shot", "1", "--inner-steps", "2"]
    assert main([*args, "--out", str(out), *TRAIN]) == 0
    payload = load_checkpoint(out)
    trained = restore_run(payload)
    assert trained.learned and trained.name == "MAML++"
    layers = [m for m in trained.model.modules() if isinstance(m, StepBatchNorm)]
    assert layers and all(m.weight.shape[0] == 2 for m in layers), "one BN scale per inner step"
    for name, buffer in trained.model.named_buffers():
        assert torch.equal(buffer, payload["buffers"][name]), f"running statistics {name} not restored"
    result = evaluate_run(out, tasks=10, steps=3)
    acc = result["methods"]["MAML++"]["accuracy_mean"]
    assert len(acc) == 4 and all(0.0 <= a <= 1.0 for a in acc)


def test_missing_learned_rates_are_a_clear_error(tmp_path):
    payload = load_checkpoint(train(tmp_path, "metasgd"))
    payload["rates"] = {}
    with pytest.raises(CheckpointError, match="learned inner rate"):
        restore_run(payload, "run")


def test_lake_runs_adapt_with_learned_rates_and_refuse_an_override(tmp_path):
    from mamlbook.reports.lake import evaluate_lake_runs
    from mamlbook.train import Trainer
    from mamlbook.train.runconfig import TrainConfig

    twenty = {"n_way": 20}
    config = TrainConfig(
        task="omniglot", model="conv4", k_shot=1, task_options=twenty, model_options=twenty, algorithm="metasgd"
    )
    path = Trainer(config, tmp_path / "run").save()
    with pytest.raises(ValueError, match="learned inner rates"):
        evaluate_lake_runs(path, inner_lr=0.1)
    report = evaluate_lake_runs(path, steps=1)
    assert report["algorithm"] == "Meta-SGD" and report["inner_lr"] == "learned"
    assert len(report["maml_error"]) == 20
