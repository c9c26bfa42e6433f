"""`CompiledMetaStep` (engine/compiled_step.py): a whole meta-iteration compiled is the loop's meta-gradient
followed by `torch.optim.Adam`, in float64 to rounding; and the benchmark runs it as `mamlbook:step-compiled`.

Each compile takes 5-20 s on two cores (a C++ compiler is needed), so the file compiles four times:
float64 sinusoid at 1 and 3 inner steps, a float64 Tanh classifier with ce, and the bench's float32
sinusoid at 1 step.
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

import mamlbook as mb
from mamlbook.bench.runner import PROBLEMS, _impl_names, read_rows, run_bench, write_json
from mamlbook.engine import NotClosedForm
from mamlbook.engine.compiled_step import CompiledMetaStep, meta_step_function
from mamlbook.engine.mlp_closed import mlp_plan
from mamlbook.losses import get_loss
from mamlbook.meta import MetaSGD
from mamlbook.models import Conv4

needs_compiler = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("cc")), reason="torch.compile needs a C++ compiler"
)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: timings and compiles on one thread


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@needs_compiler
@pytest.mark.parametrize("steps", [1, 3])
def test_equals_loop_meta_gradient_then_adam(steps: int) -> None:
    torch.manual_seed(0)
    model = mb.SineMLP().double()
    reference = mb.SineMLP().double()
    reference.load_state_dict(model.state_dict())
    batches = [
        mb.Sinusoid(k_shot=5, k_query=7).sample(4, torch.Generator().manual_seed(seed)).to(dtype=torch.float64)
        for seed in range(4)
    ]
    compiled = CompiledMetaStep(model, "mse", steps, inner_lr=0.1, lr=1e-2)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    for i, batch in enumerate(batches):
        if i == 2:  # the parameters' storage replaced from outside: the step must follow the model
            for p in model.parameters():
                p.data = p.data.clone()
        loss = compiled.step(batch)
        ref_loss, grads = mb.meta_gradient(
            reference, dict(reference.named_parameters()), batch, "mse", steps, 0.1, order=2, strategy="loop"
        )
        for name, p in reference.named_parameters():
            p.grad = grads[name]
        optimizer.step()
        assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12)
        for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
            assert relative(p.detach(), q.detach()) < 1e-10, (i, name)
    assert compiled.compile_seconds is not None and compiled.compile_seconds > 0
    assert float(compiled.step_count) == len(batches)
    assert compiled.flat.data_ptr() == next(model.parameters()).data_ptr()  # the model's weights are the buffer


@pytest.mark.parametrize(
    "loss,compiled", [pytest.param("ce", True, marks=needs_compiler, id="ce-compiled"), ("bce", False)]
)
def test_classification_equals_the_loop(loss: str, compiled: bool) -> None:
    """Other losses, Tanh, two inner steps; bce runs the function that is compiled eagerly (no compile)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (3, 9), generator=g) if loss == "ce" else torch.rand(3, 9, 3, generator=g).double()
    batch = mb.TaskBatch(x[:, :4], y[:, :4], x[:, 4:], y[:, 4:])
    meta = CompiledMetaStep(model, loss, 2, inner_lr=0.3, lr=1e-2)
    eager = meta_step_function(mlp_plan(model), meta._slots, get_loss(loss), 2, 0.3, meta.adam)
    state = (meta.flat, meta.exp_avg, meta.exp_avg_sq, meta.step_count)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    for _ in range(2):
        if compiled:
            value = meta.step(batch)
        else:
            value = eager(*state, batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        ref_loss, grads = mb.meta_gradient(reference, dict(reference.named_parameters()), batch, loss, 2, 0.3, 2)
        for name, p in reference.named_parameters():
            p.grad = grads[name]
        optimizer.step()
        assert float(value) == pytest.approx(float(ref_loss), rel=1e-12)
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            assert relative(p.detach(), q.detach()) < 1e-10


def test_refuses_what_has_no_closed_form() -> None:
    with pytest.raises(NotClosedForm, match="Conv2d"):
        CompiledMetaStep(Conv4(hidden=4))
    model = mb.SineMLP()
    with pytest.raises(NotClosedForm, match="plain SGD inner steps only; got MetaSGD"):
        CompiledMetaStep(model, rule=MetaSGD.like(mb.params_of(model), 0.1))
    with pytest.raises(NotClosedForm, match="l1_loss"):
        CompiledMetaStep(model, loss_fn=torch.nn.functional.l1_loss)
    with pytest.raises(ValueError, match="at least one inner step"):
        CompiledMetaStep(model, steps=0)


def test_bench_names_it_for_mlp_chains_only() -> None:
    assert _impl_names(["mamlbook:step-compiled"], PROBLEMS["sinusoid"].make_model()) == ["mamlbook:step-compiled"]
    with pytest.raises(ValueError, match="MLP chains"):
        _impl_names(["mamlbook:step-compiled"], PROBLEMS["omniglot-5w1s"].make_model())


@needs_compiler
def test_bench_runs_it_and_records_the_compile_time(tmp_path) -> None:
    rows = run_bench(
        ["sinusoid"], [1], ["mamlbook:step-compiled"], repeat=2, warmup=1, progress=False, isolate=False, threads=1
    )
    (row,) = rows
    assert (row["impl"], row["strategy"], row["order"], row["steps"]) == ("mamlbook", "step-compiled", 2, 1)
    assert row["compile_s"] > 0 and 0 < row["ms_min"] <= row["ms_median"]
    (typed,) = read_rows(write_json(rows, tmp_path / "r.json"))
    assert typed.compile_s == pytest.approx(row["compile_s"])
    with pytest.raises(ValueError, match="second-order"):
        run_bench(["sinusoid"], [1], ["mamlbook:step-compiled"], order=1, repeat=1, warmup=0, progress=False,
                  isolate=False)  # fmt: skip
