"""Time to first use of the numba engine in a fresh process: the first ``fd.dense`` call per
dtype (what a user's first line pays), then one first call of every other contract function.

    NUMBA_CACHE_DIR=$(mktemp -d) python bench/first_use.py [float32|float64]   # cold: compiles
    NUMBA_CACHE_DIR=<same dir>   python bench/first_use.py [float32|float64]   # warm: loads the cache

(both dtypes, in this order, without an argument; the second then pays no numba import).
"""
import sys
import time

start = time.perf_counter()
import numpy as np  # noqa: E402

import fusedense as fd  # noqa: E402
from fusedense import abi  # noqa: E402
from fusedense._backends import load  # noqa: E402
from fusedense.gate import checked_record  # noqa: E402
from fusedense.layout import make_layout  # noqa: E402

print(f"import fusedense: {time.perf_counter() - start:.2f} s")


def timed(label, call):
    """Wall time, and this process's CPU time: on shared cores the wall time grows with the
    load while compiling (single-threaded) stays about the same CPU time."""
    begin, begin_cpu = time.perf_counter(), time.process_time()
    call()
    print(f"  {label}: {time.perf_counter() - begin:.2f} s ({time.process_time() - begin_cpu:.2f} s CPU)")


rng = np.random.default_rng(0)
for dtype in sys.argv[1:] or ("float32", "float64"):
    x = rng.standard_normal((8, 16)).astype(dtype)
    W = rng.standard_normal((16, 4)).astype(dtype)
    b = np.zeros(4, dtype)
    print(np.dtype(dtype).name)
    timed("fd.dense (first call)", lambda: fd.dense(x, W, b, activation="relu", backend="numba"))

    engine = load("numba")
    y, z = np.empty((8, 4), dtype), np.empty((8, 4), dtype)
    layout, alphas, n_params = make_layout([16, 8, 4], ["relu", "identity"])
    layers = checked_record(layout, alphas, n_params)
    params = rng.standard_normal(n_params).astype(dtype)
    labels = rng.integers(0, 4, 8)
    hyper = np.zeros(abi.N_HYPER)
    hyper[[abi.H_OPTIMIZER, abi.H_LR, abi.H_BETA1, abi.H_BETA2, abi.H_EPS, abi.H_STEP]] = (
        abi.OPT_ADAM, 0.1, 0.9, 0.999, 1e-8, 1)
    timed("dense_backward", lambda: engine.dense_backward(
        y, x, W, z, y, 1, 0.0, np.empty_like(x), np.empty_like(W), np.empty_like(b)))
    timed("activation_forward/backward", lambda: (
        engine.activation_forward(x, 1, 0.0, np.empty_like(x)),
        engine.activation_backward(x, None, x, 1, 0.0, np.empty_like(x))))
    timed("mlp_forward", lambda: engine.mlp_forward(x, params, layers, y))
    timed("loss", lambda: engine.loss(abi.LOSS_SPARSE_XENT, y, labels, np.empty_like(y)))
    timed("sgd_step + adam_step", lambda: (
        engine.sgd_step(params, params.copy(), np.zeros_like(params), 0.1, 0.9, False, 0.0),
        engine.adam_step(params, params.copy(), np.zeros_like(params), np.zeros_like(params), 1, 0.1,
                         0.9, 0.999, 1e-8, 0.0, False)))
    timed("mlp_train_step", lambda: engine.mlp_train_step(
        x, labels, params, np.empty_like(params), np.zeros((2, n_params), dtype), layers,
        abi.LOSS_SPARSE_XENT, hyper, None, None))
print(f"total: {time.perf_counter() - start:.2f} s")
