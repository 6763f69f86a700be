"""Fair timing on a noisy, shared machine: candidates run in alternating blocks and each one's
time is the median of its blocks (so a burst of load hits every candidate alike)."""
from __future__ import annotations

import statistics
import time

__all__ = ["compare"]


def _calibrate(fn, target_seconds):
    """How many calls of ``fn`` fill about ``target_seconds`` (at least one)."""
    calls, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= target_seconds / 4 or calls >= 1 << 20:
            return max(1, int(calls * target_seconds / max(elapsed, 1e-9)))
        calls *= 4


def compare(candidates: dict, blocks=7, block_seconds=0.02) -> dict:
    """``{name: median seconds per call}`` for zero-argument callables, timed in alternating blocks."""
    counts = {name: _calibrate(fn, block_seconds) for name, fn in candidates.items()}
    samples = {name: [] for name in candidates}
    for _ in range(blocks):
        for name, fn in candidates.items():
            calls = counts[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(times) for name, times in samples.items()}
