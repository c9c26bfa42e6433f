"""`mamlbook.memory`: peaks of what autograd's graphs hold and of what the CPU allocator holds, on
cases whose answer is known byte for byte, then on MAML, where the peak (unlike the sum of every
byte ever saved) separates first-order MAML, flat in the inner steps, from second-order MAML."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import mamlbook
from mamlbook.memory import SavedTensorMemory, allocator_peak

N = 1000  # float32 elements: 4000 bytes per tensor
BYTES = 4 * N


def test_a_chain_holds_every_saved_output_until_its_backward_frees_them():
    x = torch.ones(N, requires_grad=True)
    with SavedTensorMemory() as memory:
        y = x
        for _ in range(5):
            y = y.exp()  # exp saves its output: one new storage per op
        assert memory.live_bytes == memory.peak_bytes == 5 * BYTES
        y.sum().backward()
    assert memory.live_bytes == 0
    assert memory.peak_bytes == memory.total_bytes == 5 * BYTES


def test_graphs_freed_one_after_another_peak_at_one_graph_while_the_sum_counts_all():
    x = torch.ones(N, requires_grad=True)
    with SavedTensorMemory() as memory:
        for _ in range(4):
            x.exp().exp().sum().backward()
    assert memory.peak_bytes == 2 * BYTES
    assert memory.total_bytes == 4 * 2 * BYTES
    assert memory.live_bytes == 0


def test_a_retained_graph_stays_counted_until_it_is_dropped():
    x = torch.ones(N, requires_grad=True)
    with SavedTensorMemory() as memory:
        kept = [x.exp().sum() for _ in range(3)]
        for loss in kept:
            loss.backward(retain_graph=True)
        assert memory.live_bytes == 3 * BYTES  # retained: still held after their backward
        del kept, loss
        # Released as soon as the graphs are unreachable, without a garbage collection: the graph
        # keeps a detached alias, so a saved output (as exp's) makes no reference cycle.
        assert memory.live_bytes == 0
    assert memory.peak_bytes == 3 * BYTES


def test_a_storage_saved_twice_or_through_a_view_counts_once():
    x = torch.ones(N, requires_grad=True)
    with SavedTensorMemory() as memory:
        h = x * 1.0  # a new storage, not saved by mul-by-scalar
        y = h * h  # mul saves both inputs: the same storage twice
        z = (h[: N // 2] * h[N // 2 :]).sum()  # two views of it, saved again
        assert memory.peak_bytes == BYTES
        (y.sum() + z).backward()
    assert memory.total_bytes == 2 * BYTES + 2 * (BYTES // 2)
    assert memory.live_bytes == 0


def test_the_hooks_leave_the_second_order_meta_gradient_unchanged():
    torch.manual_seed(0)
    model = mamlbook.SineMLP().double()
    theta = mamlbook.params_of(model)
    batch = mamlbook.Sinusoid(k_shot=5).sample(3, torch.Generator().manual_seed(1)).to(dtype=torch.float64)
    _, plain = mamlbook.meta_gradient(model, theta, batch, "mse", 3, 0.01, 2, "loop")
    with SavedTensorMemory() as memory:
        _, hooked = mamlbook.meta_gradient(model, theta, batch, "mse", 3, 0.01, 2, "loop")
    assert all(torch.equal(plain[k], hooked[k]) for k in plain)
    assert memory.peak_bytes > 0 and memory.live_bytes == 0


def maml_memory(order: int, steps: int, strategy: str = "loop") -> SavedTensorMemory:
    """Saved-tensor memory of one meta-gradient (forward and backward) on the sinusoid MLP."""
    torch.manual_seed(0)
    model = mamlbook.SineMLP().double()
    theta = mamlbook.params_of(model)
    batch = mamlbook.Sinusoid(k_shot=10).sample(5, torch.Generator().manual_seed(2)).to(dtype=torch.float64)
    with SavedTensorMemory() as memory:
        mamlbook.meta_gradient(model, theta, batch, "mse", steps, 0.01, order, strategy)
    assert memory.live_bytes == 0
    return memory


@pytest.mark.parametrize("strategy", ["loop", "folded"])
def test_first_order_peak_is_flat_in_the_inner_steps_and_second_order_peak_grows(strategy):
    steps = (1, 2, 4, 8)
    first = [maml_memory(1, n, strategy) for n in steps]
    second = [maml_memory(2, n, strategy) for n in steps]
    first_peaks = [m.peak_bytes for m in first]
    assert max(first_peaks) <= 1.02 * min(first_peaks), first_peaks
    second_peaks = [m.peak_bytes for m in second]
    assert all(a < b for a, b in zip(second_peaks, second_peaks[1:], strict=False)), second_peaks
    assert second_peaks[-1] > 3 * second_peaks[0]
    # The sum of every byte saved grows with the steps for both: it is not a peak.
    assert first[-1].total_bytes > 3 * first[0].total_bytes


def test_allocator_peak_of_a_known_sequence():
    def work() -> torch.Tensor:
        a = torch.ones(10**6)  # 4 MB
        b = a * 2  # 4 MB more: the peak, 8 MB
        del a
        return b.sum()

    measured = allocator_peak(work)
    assert 8 * 10**6 <= measured.peak_bytes < 8 * 10**6 + 4096
    assert measured.end_bytes < 4096  # only the sum's result is still held
    assert float(measured.result) == 2 * 10**6


def test_allocator_peak_counts_only_tensors_the_call_allocated():
    held = [torch.ones(10**6)]

    def swap() -> torch.Tensor:
        held.pop()  # frees 4 MB allocated before the call: the profiler does not see it
        return torch.ones(10**6)  # 4 MB of the call's own

    measured = allocator_peak(swap)
    assert 4 * 10**6 <= measured.peak_bytes < 4 * 10**6 + 4096


def test_allocator_peak_writes_nothing_to_stderr_in_a_fresh_process():
    """torch.profiler's Kineto prints lines natively on every start and stop; in a chapter they
    would be a cell's stderr (the smoke run of book/faster.md benchmarks in its own kernel)."""
    code = "import torch; from mamlbook.memory import allocator_peak; held = [torch.ones(10**6)]\n"
    code += "print(allocator_peak(lambda: (held.pop(), torch.ones(10**6).sum())[1]).peak_bytes)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert int(done.stdout) >= 4 * 10**6


def test_checkpointing_holds_less_than_folding_at_many_steps():
    """The claim of book/faster.md's memory section, at a small size: with the steps, folded
    second-order MAML's peak allocation grows and the checkpointed strategy's stays nearly flat."""
    model = mamlbook.models.Conv4(n_way=3, hidden=8)
    theta = mamlbook.params_of(model)
    g = torch.Generator().manual_seed(0)
    batch = mamlbook.TaskBatch(
        torch.randn(2, 3, 1, 28, 28, generator=g),
        torch.arange(3).repeat(2, 1),
        torch.randn(2, 6, 1, 28, 28, generator=g),
        torch.arange(3).repeat_interleave(2).repeat(2, 1),
    )

    def peak(strategy: str, steps: int) -> int:
        return allocator_peak(
            lambda: mamlbook.meta_gradient(model, theta, batch, "ce", steps, 0.4, 2, strategy)
        ).peak_bytes

    folded = peak("folded", 8) / peak("folded", 1)
    checkpointed = peak("checkpointed", 8) / peak("checkpointed", 1)
    assert checkpointed < 1.3 < folded, (checkpointed, folded)


def test_bench_rows_carry_the_peaks_and_keep_them_in_the_results_file(tmp_path):
    from mamlbook.bench.runner import read_rows, run_bench, write_json

    rows = run_bench(
        ["sinusoid"], [1, 4], ["mamlbook:folded", "mamlbook:vmap"], repeat=1, warmup=0, progress=False, isolate=False
    )
    folded = {r["steps"]: r for r in rows if r["strategy"] == "folded"}
    assert 0 < folded[1]["saved_peak_mib"] < folded[4]["saved_peak_mib"] <= folded[4]["saved_total_mib"]
    assert folded[1]["alloc_peak_mib"] < folded[4]["alloc_peak_mib"]
    vmap = [r for r in rows if r["strategy"] == "vmap"]
    assert all(r["saved_peak_mib"] is None and r["alloc_peak_mib"] > 0 for r in vmap)  # torch.func refuses the hooks
    stored = read_rows(write_json(rows, tmp_path / "bench.json", command="test"))
    assert [r.saved_peak_mib for r in stored] == [r["saved_peak_mib"] for r in rows]
    assert [r.alloc_peak_mib for r in stored] == [r["alloc_peak_mib"] for r in rows]
