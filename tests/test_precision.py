"""Reduced precision (`mamlbook.precision`): an option of every strategy, the trainer, and the bench.

What could go wrong and is checked here: the option is silently ignored (the result would equal full
precision's), a worker thread runs in full precision while the caller asked for bf16 (autocast is
per thread), the parameters or the meta-gradient come back in bfloat16, full precision changes by
asking for "fp32", and a bad name is accepted.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mamlbook import meta_gradient, query_losses
from mamlbook.bench.flops import matmul_peak, meta_iteration_gflop
from mamlbook.bench.runner import PROBLEMS, format_table, run_bench
from mamlbook.precision import autocast_state, check_precision, entered, reduced_precision
from mamlbook.tasks import Sinusoid
from mamlbook.train.runconfig import TrainConfig
from mamlbook.train.trainer import Trainer


def conv_batch(tasks: int = 3):
    problem = PROBLEMS["omniglot-5w1s"]
    torch.manual_seed(0)
    model = problem.make_model()
    batch = problem.make_batch(torch.Generator().manual_seed(0), tasks)
    return model, batch


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.double().flatten() for g in grads.values()])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_names_are_checked() -> None:
    assert check_precision(None) == "fp32"
    assert check_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'float8'"):
        check_precision("float8")
    model, batch = conv_batch(1)
    with pytest.raises(ValueError, match="unknown precision"):
        meta_gradient(model, dict(model.named_parameters()), batch, "ce", 1, 0.4, precision="half")
    with pytest.raises(ValueError, match="unknown precision"):
        TrainConfig(precision="int8")


def test_reduced_precision_refuses_parameters_it_would_not_lower() -> None:
    """Autocast casts float32 only: bf16 on float64 weights would silently change nothing."""
    model, batch = conv_batch(1)
    model = model.double()
    with pytest.raises(ValueError, match="lowers float32 parameters"):
        meta_gradient(model, dict(model.named_parameters()), batch.to(dtype=torch.float64), "ce", 1, 0.4,
                      precision="bf16")
    with pytest.raises(ValueError, match="lowers float32 parameters"):
        TrainConfig(dtype="float64", precision="fp16")
    assert TrainConfig(dtype="float64", precision="fp32").precision == "fp32"


def test_fp32_is_full_precision_exactly() -> None:
    model, batch = conv_batch()
    params = dict(model.named_parameters())
    _, default = meta_gradient(model, params, batch, "ce", 1, 0.4)
    _, asked = meta_gradient(model, params, batch, "ce", 1, 0.4, precision="fp32")
    assert all(torch.equal(default[k], asked[k]) for k in default)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_changes_the_arithmetic_but_not_the_dtypes(precision: str) -> None:
    model, batch = conv_batch()
    params = dict(model.named_parameters())
    loss32, full = meta_gradient(model, params, batch, "ce", 1, 0.4)
    loss16, reduced = meta_gradient(model, params, batch, "ce", 1, 0.4, precision=precision)
    assert loss16.dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in reduced.values())  # accumulated in the parameters' dtype
    error = relative(flat(reduced), flat(full))
    assert 1e-4 < error < 1.0  # it ran in reduced precision (not ignored), and still points the same way
    assert torch.nn.functional.cosine_similarity(flat(reduced), flat(full), dim=0) > 0.8
    assert abs(loss16.item() - loss32.item()) < 0.05 * abs(loss32.item())


def test_worker_threads_inherit_reduced_precision() -> None:
    """The threads strategy runs each task on a worker thread: it must get the caller's autocast."""
    model, batch = conv_batch(4)
    params = dict(model.named_parameters())
    _, loop = meta_gradient(model, params, batch, "ce", 1, 0.4, strategy="loop", precision="bf16")
    _, threads = meta_gradient(model, params, batch, "ce", 1, 0.4, strategy="threads", precision="bf16")
    _, full = meta_gradient(model, params, batch, "ce", 1, 0.4, strategy="loop")
    # The same per-task arithmetic on another thread: far closer to the loop's bf16 than bf16 is to fp32.
    assert relative(flat(threads), flat(loop)) < 0.1 * relative(flat(loop), flat(full))


def test_autocast_state_travels_to_another_thread() -> None:
    import threading

    seen = {}
    with reduced_precision("bf16"):
        state = autocast_state()

    def worker() -> None:
        with entered(state):
            seen["on"] = torch.is_autocast_enabled("cpu")
            seen["out"] = nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3)).dtype

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"on": True, "out": torch.bfloat16}
    assert state.cpu == torch.bfloat16 and autocast_state().cpu is None  # left as it was outside


def test_query_losses_take_the_option_on_an_mlp() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, 1))
    batch = Sinusoid(k_shot=10).sample(5, torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    for strategy in ("loop", "vmap", "folded"):
        full = query_losses(model, params, batch, "mse", 1, 0.01, strategy=strategy)
        reduced = query_losses(model, params, batch, "mse", 1, 0.01, strategy=strategy, precision="bf16")
        assert reduced.dtype == full.dtype == torch.float32
        assert not torch.equal(reduced, full)
        assert torch.allclose(reduced, full, rtol=0.05, atol=1e-3)


def test_trainer_trains_in_bf16_and_keeps_float32_parameters(tmp_path) -> None:
    config = TrainConfig(iterations=3, meta_batch=4, eval_every=3, eval_tasks=4, checkpoint_every=3, precision="bf16")
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit(progress=False)
    assert all(p.dtype == torch.float32 for p in trainer.params.values())
    resumed = Trainer.resume(tmp_path / "run")
    assert resumed.config.precision == "bf16"
    # The objective honours the run's precision: fp32's differs on the same batch and weights.
    batch = trainer.tasks.sample(4, torch.Generator().manual_seed(1))
    full = Trainer(TrainConfig(**{**config.to_dict(), "precision": "fp32"}))
    full.model.load_state_dict(trainer.model.state_dict())
    assert trainer.meta_objective(batch).item() != full.meta_objective(batch).item()


def test_bench_rows_carry_precision_and_flops() -> None:
    rows = run_bench(
        ["sinusoid"],
        [1],
        ["mamlbook:folded", "learn2learn"],
        repeat=1,
        warmup=0,
        progress=False,
        isolate=False,
        precisions=["fp32", "bf16"],
    )
    assert [(r["impl"], r["precision"]) for r in rows] == [
        ("mamlbook", "fp32"),
        ("mamlbook", "bf16"),
        ("learn2learn", "fp32"),  # peers run in full precision only
    ]
    # One count of the useful work per setting, the same for every implementation of it.
    assert len({r["gflop"] for r in rows}) == 1 and rows[0]["gflop"] > 0
    assert all(r["gflops"] == pytest.approx(r["gflop"] / (r["ms_median"] / 1000)) for r in rows)
    assert "bf16" in format_table(rows)


def test_flop_count_scales_with_the_work() -> None:
    problem = PROBLEMS["sinusoid"]
    model = problem.make_model()
    small = problem.make_batch(torch.Generator().manual_seed(0), 5)
    large = problem.make_batch(torch.Generator().manual_seed(0), 10)
    one = meta_iteration_gflop(model, small, "mse", 1, 0.01, 2)
    assert meta_iteration_gflop(model, large, "mse", 1, 0.01, 2) == pytest.approx(2 * one)
    assert meta_iteration_gflop(model, small, "mse", 3, 0.01, 2) > 2 * one  # more inner steps, more work
    assert matmul_peak(torch.float32, size=128, seconds=0.05) > 0.1


def test_the_matmul_peak_shrinks_a_product_that_would_not_fit_its_time(monkeypatch) -> None:
    # An emulated bfloat16 (no AVX-512 BF16 or AMX) takes about a minute per 2048-square product: the peak
    # must then be measured on a smaller one instead of holding up `mamlbook bench` for minutes.
    sizes: list[int] = []
    mm = torch.mm

    def recording(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sizes.append(a.shape[0])
        return mm(a, b)

    monkeypatch.setattr(torch, "mm", recording)
    assert matmul_peak(torch.float32, size=4096, seconds=0.0) > 0
    assert set(sizes) == {256}, "no time at all: the smallest product only"
    sizes.clear()
    matmul_peak(torch.float32, size=512, seconds=0.5)
    assert sizes[0] == 256 and max(sizes) == 512 == sizes[-1], "time enough: grown to the size asked for, no further"


def test_the_precision_study_pairs_runs_on_the_same_tasks_and_reads_back(monkeypatch, tmp_path) -> None:
    from mamlbook.reports import paired_difference
    from mamlbook.studies import load_result, run_study, save_result
    from mamlbook.studies import precision as study

    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(study, "ALGORITHMS", {"MAML": study.ALGORITHMS["MAML"]})
    result = run_study("precision", small=True, progress=False)
    stored = load_result(save_result(result, tmp_path / "precision.json"))
    assert stored == result
    errors = stored.gradient
    assert errors.error("MAML", 1, "fp32").relative_error < 1e-4 < errors.error("MAML", 1, "bf16").relative_error
    assert errors.spread("MAML", 1) > 0
    training = stored.training
    assert not training.missing and {r.precision for r in training.runs} == {"fp32", "bf16"}
    bf16, fp32 = training.per_task("bf16"), training.per_task("fp32")
    assert len(bf16) == len(fp32) == 2 and len(bf16[0]) == training.test_tasks
    assert paired_difference(bf16, fp32).n_tasks == training.test_tasks
    # Cached: a second study trains nothing.
    monkeypatch.setattr(Trainer, "step", lambda self: pytest.fail("a finished run was trained again"))
    again = run_study("precision", small=True, progress=False)
    assert again.training.runs == stored.training.runs
