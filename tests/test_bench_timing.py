"""The timing method of `fusedense bench`: alternating blocks, sample budget, summaries (no clocks
asserted), and the thread counts every timed side runs on."""
import pytest

import fusedense as fd
from fusedense.benchmarking import timing


def test_interleaved_alternates_systems_in_blocks_and_rotates_the_order():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = timing.interleaved(runs, {"a": 2, "b": 1, "c": 1}, samples=3)
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls == list("aabc" + "bcaa" + "caab")  # each round starts one system later


def test_plan_never_takes_fewer_than_min_samples_even_for_slow_calls():
    slow = timing.Method(block_seconds=1e-4, samples=10, cell_seconds=0.0, peak_n=64)
    reps, samples = timing.plan({"a": lambda: None}, slow)
    assert samples == timing.MIN_SAMPLES and reps["a"] >= 1


def test_speedup_is_the_median_of_per_round_ratios_not_a_ratio_of_medians():
    baseline = [1.0, 3.0, 10.0]  # the machine drifts between rounds; a burst hits round 3's baseline
    system = [0.5, 1.5, 1.0]
    assert timing.summarize(system, baseline)["speedup_vs_numpy"] == 2.0  # ratio of medians: 3.0
    assert timing.summarize(system)["median_us"] == 1e6


def test_spread_is_half_the_interquartile_range_over_the_median():
    summary = timing.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert summary["spread"] == (4.0 - 2.0) / 2 / 3.0


def test_every_pool_on_sets_fusedense_and_pytorch_then_restores_them():
    torch = pytest.importorskip("torch")
    before = fd.get_num_threads(), torch.get_num_threads()
    target = 1 if before != (1, 1) else 2
    with timing.every_pool_on(target):
        assert (fd.get_num_threads(), torch.get_num_threads()) == (target, target)
    assert (fd.get_num_threads(), torch.get_num_threads()) == before
