import gc
import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fusedense as fd
from fusedense import _backends, abi

# Property-based tests: "ci" (the default) is small, derandomized and bounded so CI stays fast and
# repeatable; `pytest --hypothesis-profile=long` explores many random examples for manual runs.
# deadline=None: a first call may compile (numba) or hit a cold cache, which is not a failure.
# The `backend` fixture only holds a name, so sharing it across examples is fine.
_FIXTURE_SHARED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=_FIXTURE_SHARED)
settings.register_profile("long", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=_FIXTURE_SHARED)
settings.load_profile("ci")  # --hypothesis-profile on the command line overrides this

#: Per-dtype tolerances for comparing a backend with the reference. float32 kernels reorder
#: sums (blocking, FMA), so a few ulps of the accumulated magnitude; float64 is near exact.
TOLERANCES = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def assert_close(actual, expected, dtype, scale=1.0):
    tol = TOLERANCES[np.dtype(dtype).type]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def checked_backend(name):
    # a backend that fails to load degrades silently to the next one: make that a failure here
    assert _backends.load(name).NAME == name, f"backend {name!r} is listed but did not load"
    return name


@pytest.fixture(params=fd.backends())
def backend(request):
    return checked_backend(request.param)


@pytest.fixture(params=[name for name in fd.backends() if name != "numpy"])
def compiled_backend(request):
    """The compiled backends only: for properties the NumPy oracle does not have (it releases
    the GIL only inside NumPy calls, and allocates temporaries freely)."""
    return checked_backend(request.param)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def run_in_threads(jobs):
    """Runs each job in its own thread, all released at once; returns their results in order
    (re-raising the first exception a job raised)."""
    barrier = threading.Barrier(len(jobs))
    results, errors = [None] * len(jobs), []

    def run(i):
        try:
            barrier.wait()
            results[i] = jobs[i]()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20


def rss() -> int:
    """Current resident set size in bytes (Linux /proc; the CI platform)."""
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def make_hyper(optimizer="adam", lr=1e-3, step=1, momentum=0.0, weight_decay=0.0):
    """The float64 ``hyper`` vector of mlp_train_step (see fusedense.abi) for a named optimizer."""
    hyper = np.zeros(abi.N_HYPER)
    hyper[abi.H_LR], hyper[abi.H_WEIGHT_DECAY], hyper[abi.H_STEP] = lr, weight_decay, step
    if optimizer in ("sgd", "nesterov"):
        hyper[abi.H_OPTIMIZER], hyper[abi.H_BETA1], hyper[abi.H_NESTEROV] = abi.OPT_SGD, momentum, optimizer == "nesterov"
    else:
        hyper[[abi.H_OPTIMIZER, abi.H_BETA1, abi.H_BETA2, abi.H_EPS, abi.H_DECOUPLED]] = \
            abi.OPT_ADAM, 0.9, 0.999, 1e-8, optimizer == "adamw"
    return hyper
