"""Helpers shared by the test modules (``from support import ...``).

They live here rather than in conftest.py because bench/ has a conftest.py of its own and
``from conftest import`` would find whichever directory pytest put first on sys.path.
"""
import gc
import os
import subprocess
import sys
import threading

import numpy as np

from fusedense import abi

#: Per-dtype tolerances for comparing a backend with the reference. float32 kernels reorder
#: sums (blocking, FMA), so a few ulps of the accumulated magnitude; float64 is near exact.
TOLERANCES = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def assert_close(actual, expected, dtype, scale=1.0):
    tol = TOLERANCES[np.dtype(dtype).type]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def run_in_simd_build(simd, module, *checks):
    """Runs ``module.check(dtype)`` for each named check and both dtypes in a subprocess whose
    compiled kernels dispatch to at most the ``simd`` build (FUSEDENSE_SIMD: generic, avx2),
    so that a CPU with AVX-512 tests the narrower builds too; asserts that it passed."""
    env = dict(os.environ, FUSEDENSE_SIMD=simd)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), *sys.path])
    code = (f"import {module} as t\n"
            "for dtype in ('float32', 'float64'):\n" + "".join(f"    t.{check}(dtype)\n" for check in checks))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


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


def make_hyper(optimizer="adam", lr=1e-3, step=1, momentum=0.0, weight_decay=0.0, penalty_scale=1.0):
    """The float64 ``hyper`` vector of mlp_train_step (see fusedense.abi) for a named optimizer."""
    hyper = np.zeros(abi.N_HYPER)
    hyper[abi.H_LR], hyper[abi.H_WEIGHT_DECAY], hyper[abi.H_STEP] = lr, weight_decay, step
    hyper[abi.H_PENALTY_SCALE] = penalty_scale
    if optimizer in ("sgd", "nesterov"):
        hyper[abi.H_OPTIMIZER], hyper[abi.H_BETA1], hyper[abi.H_NESTEROV] = abi.OPT_SGD, momentum, optimizer == "nesterov"
    elif optimizer == "rmsprop":  # Keras's: rho 0.9, its ε inside the square root
        hyper[[abi.H_OPTIMIZER, abi.H_BETA1, abi.H_BETA2, abi.H_EPS]] = abi.OPT_RMSPROP, momentum, 0.9, 1e-7
    else:
        hyper[[abi.H_OPTIMIZER, abi.H_BETA1, abi.H_BETA2, abi.H_EPS, abi.H_DECOUPLED]] = \
            abi.OPT_ADAM, 0.9, 0.999, 1e-8, optimizer == "adamw"
    return hyper


def relu_of(z):
    """The registry's relu on finished products: z <= 0 gives +0 (also -0), NaN passes."""
    return np.where(z <= 0, np.zeros_like(z), z)


def record(layout, alphas=None, n_params=None, penalties=None):
    """The gate's layer record for ``layout``, ``alphas`` and ``penalties`` (n_params: by default
    where the last layer ends), for calls that take a record: engines and reference.py."""
    from fusedense.gate import checked_record
    if n_params is None:
        n_params = max(int(o) + int(i) * int(n) + int(n) for o, i, n, _ in np.asarray(layout).tolist())
    return checked_record(layout, alphas, n_params, penalties=penalties)
