"""Runs one problem on several systems: each answer checked against the NumPy reference, then
the systems that got it right timed in alternating blocks (a wrong answer is reported, never timed)."""
from __future__ import annotations

from threadpoolctl import threadpool_limits

from . import timing
from .systems import NotSupported
from .workloads import CHECK_TOLERANCE, check_error


def _check(result, expected, tolerance=None) -> str:
    error = check_error(result, expected)
    limit = CHECK_TOLERANCE[expected.dtype] if tolerance is None else tolerance
    return "ok" if error <= limit else f"wrong answer (max error {error:.2e} of scale)"


def measure(problem, systems, threads, method):
    """One row per system: prepares and checks every system on one problem, then times the good
    ones interleaved (``median_us``, ``speedup_vs_numpy`` when "numpy" ran, ``status``)."""
    workload, batch = problem.workload, problem.x.shape[0]
    rows, runs, first = {}, {}, {}
    # the reference on one BLAS thread: NumPy's OpenBLAS threads spin for ~0.1 s after a call
    # (2^28 cycles), and on few cores would take them from the system timed next (2-thread
    # dense batch 64 took 3x its time, docs/performance-notes.md)
    with threadpool_limits(1, user_api="blas"):
        expected = problem.expected()
    for system in systems:
        row = {"workload": workload.name, "title": workload.title, "batch": batch, "system": system.name}
        rows[system.name] = row
        try:
            run, result, first[system.name] = timing.first_call(lambda: system.prepare(problem, threads))
        except NotSupported as why:
            row["status"] = f"n/a: {why}"
            continue
        except Exception as exc:  # a peer's own failure is reported, the other systems still run
            row["status"] = f"error: {type(exc).__name__}: {exc}"
            continue
        row["status"] = _check(result(), expected, system.tolerance)
        if row["status"] == "ok":
            runs[system.name] = run
    times = timing.interleaved(runs, *timing.plan(runs, method)) if runs else {}
    flops = problem.flops()
    for name, seconds in times.items():
        row = rows[name]
        row.update(timing.summarize(seconds, times.get("numpy")))
        row["gflops"] = flops / (row["median_us"] * 1e-6) / 1e9
        row["first_call_ms"] = first[name] * 1e3
    return list(rows.values())
