"""How we time: warm up, calibrate a block of repetitions per system, then take samples with the
systems in ALTERNATING blocks (rotating the order each round), so that a shared, noisy machine
drifts the same way for everyone and ratios come from measurements taken side by side.
Also: the machine's description and its practical peak (a large GEMM through NumPy's BLAS).
"""
from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_info


@dataclass(frozen=True)
class Method:
    block_seconds: float  # each sample times repetitions of one call lasting about this long
    samples: int  # samples per system (the median and spread come from these)...
    cell_seconds: float  # ...unless they would take longer than this per workload and batch size
    peak_n: int  # size of the square GEMM that measures the practical peak
    rounds: int = 3  # with several threads: processes per system, alternated (benchmarking/isolated.py)


#: Fewest samples a median and spread are taken from, whatever the time budget.
MIN_SAMPLES = 3
QUICK = Method(block_seconds=0.004, samples=5, cell_seconds=1.0, peak_n=1024, rounds=3)
FULL = Method(block_seconds=0.02, samples=15, cell_seconds=15.0, peak_n=2048, rounds=5)


def first_call(prepare):
    """``(run, result, seconds)``: preparing the system and its first call, timed together
    (JIT compilation, graph building, lazy imports — the cost a new process pays once)."""
    start = time.perf_counter()
    run, result = prepare()
    run()
    return run, result, time.perf_counter() - start


def calibrate(run, block_seconds):
    """``(repetitions, seconds per call)``: repetitions of ``run`` lasting about ``block_seconds``
    (at least 1); warms up on the way."""
    reps = 1
    while True:
        start = time.perf_counter()
        for _ in range(reps):
            run()
        elapsed = time.perf_counter() - start
        if elapsed >= block_seconds / 4 or reps >= 1 << 20:
            return max(1, round(reps * block_seconds / elapsed)), elapsed / reps
        reps *= 4


def plan(runs: dict, method: Method):
    """``(repetitions per system, samples)``: each system's block, and as many rounds as fit
    the method's time per cell (slow calls on a busy machine get fewer, never below MIN_SAMPLES)."""
    reps, round_seconds = {}, 0.0
    for name, run in runs.items():
        reps[name], per_call = calibrate(run, method.block_seconds)
        round_seconds += reps[name] * per_call
    affordable = int(method.cell_seconds / round_seconds) if round_seconds else method.samples
    return reps, min(method.samples, max(MIN_SAMPLES, affordable))


@contextlib.contextmanager
def every_pool_on(threads: int):
    """fusedense, the BLAS/OpenMP pools already loaded and PyTorch (if installed) on ``threads``
    threads inside, restored after. Benchmarks time every side on the same count: on a shared
    machine, pools left on more threads spin against each other (docs/performance-notes.md)."""
    from ..threads import threads_limited
    try:
        import torch
    except ImportError:
        torch = None
    previous = None if torch is None else torch.get_num_threads()
    with threads_limited(threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(previous)


@contextlib.contextmanager
def _garbage_collector_off():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def interleaved(runs: dict, reps: dict, samples: int) -> dict:
    """Seconds per call, ``samples`` of them per system, measured in alternating blocks (with the
    garbage collector off, as timeit does, so that no system pays for another's garbage)."""
    names = list(runs)
    times = {name: [] for name in names}
    with _garbage_collector_off():
        for i in range(samples):
            for name in names[i % len(names):] + names[:i % len(names)]:
                run, n = runs[name], reps[name]
                start = time.perf_counter()
                for _ in range(n):
                    run()
                times[name].append((time.perf_counter() - start) / n)
    return times


def summarize(seconds, baseline=None) -> dict:
    """Median, relative spread (half the interquartile range over the median) and, against
    ``baseline`` samples taken in the same rounds, the median per-round speed-up."""
    seconds = np.asarray(seconds)
    q1, median, q3 = np.percentile(seconds, [25, 50, 75])
    summary = {"median_us": median * 1e6, "spread": (q3 - q1) / 2 / median,
               "samples_us": [round(s * 1e6, 3) for s in seconds]}
    if baseline is not None:
        summary["speedup_vs_numpy"] = float(np.median(np.asarray(baseline) / seconds))
    return summary


# --- the machine --------------------------------------------------------------------------

PEERS = ("numpy", "scipy", "numba", "torch", "onnxruntime", "onnx", "jax", "jaxlib", "threadpoolctl",
         "matplotlib")


#: the instruction-set flags of /proc/cpuinfo that decide which kernels run
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")


def cpu_model() -> str:
    """The CPU's name, family/model and ISA flags (the kernels' dispatch depends on them), e.g.
    'AMD EPYC (family 26 model 2; avx2 fma avx512f ...)'."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if key.strip() == "flags":
                    break
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    return (f"{fields['model name']} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}; "
            f"{' '.join(f for f in ISA_FLAGS if f in flags)})")


def versions() -> dict:
    """Installed versions read from package metadata (nothing gets imported)."""
    found = {}
    for name in PEERS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def blas_info() -> list:
    """What threadpoolctl reports about the loaded BLAS/OpenMP libraries."""
    keys = ("internal_api", "version", "num_threads", "threading_layer", "architecture")
    return [{k: info.get(k) for k in keys} for info in threadpool_info()]


def blas_environment() -> dict:
    """OpenBLAS settings taken from the environment: OPENBLAS_CORETYPE overrides the kernels
    OpenBLAS would pick for this CPU (Haswell's AVX2 ones on an AVX-512 machine halve its GEMM)."""
    return {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}


def gemm_peak(dtype, n=2048, repeats=5) -> float:
    """GFLOP/s of the best of ``repeats`` n×n GEMMs through NumPy's BLAS: the practical peak."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)).astype(dtype), rng.random((n, n)).astype(dtype)
    out = a @ b  # warm-up: page faults, thread pool start
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def machine(threads: int, dtype, peak_n: int) -> dict:
    """The machine as this run found it; call it first, so that the load average is other
    processes' (a busy machine ruins multi-threaded timings: threads wait for a time slice)."""
    import fusedense

    return {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads, "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(), "fusedense": fusedense.__version__,
        "fusedense_backends": fusedense.backends(), "versions": versions(), "blas": blas_info(),
        "blas_environment": blas_environment(),
        "peak_gflops": gemm_peak(dtype, peak_n), "peak_dtype": np.dtype(dtype).name,
    }
