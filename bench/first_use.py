"""Time to first use of the numba backend in a fresh process: ``import fusedense``, then one
call of every kernel-interface function (one dtype), as a user's first program would.

    NUMBA_CACHE_DIR=$(mktemp -d) python bench/first_use.py float32   # cold: compiles
    NUMBA_CACHE_DIR=<same dir>   python bench/first_use.py float32   # warm: loads the cache
"""
import sys
import time

start = time.perf_counter()
import numpy as np  # noqa: E402

t_numpy = time.perf_counter()
import fusedense  # noqa: E402,F401
from fusedense.layout import make_layout  # noqa: E402

t_fusedense = time.perf_counter()
from fusedense._backends import load  # noqa: E402

backend = load("numba")
t_backend = time.perf_counter()

dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 16)).astype(dtype)
W = rng.standard_normal((16, 4)).astype(dtype)
b = np.zeros(4, dtype)
y, z = np.empty((8, 4), dtype), np.empty((8, 4), dtype)
backend.activation_forward(x, 1, 0.0, np.empty_like(x))
backend.activation_backward(x, None, x, 1, 0.0, np.empty_like(x))
backend.dense_forward(x, W, b, 1, 0.0, y, z)
backend.dense_backward(y, x, W, z, y, 1, 0.0, np.empty_like(x), np.empty_like(W), np.empty_like(b))
layout, alphas, n_params = make_layout([16, 8, 4], ["relu", "softmax"])
params = rng.standard_normal(n_params).astype(dtype)
backend.mlp_forward(x, params, layout, alphas, y)
labels = rng.integers(0, 4, 8)
backend.softmax_xent(y, labels, np.empty_like(y))
velocity, m, v = (np.zeros_like(params) for _ in range(3))
backend.sgd_step(params, params.copy(), velocity, 0.1, 0.9, False, 0.0)
backend.adam_step(params, params.copy(), m, v, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False)
hyper = np.array([1, 0.1, 0.9, 0.999, 1e-8, 0.0, 0, 0, 1])
backend.mlp_train_step(x, labels, params, np.empty_like(params), np.zeros((2, n_params), dtype),
                       layout, alphas, 0, hyper)
end = time.perf_counter()
print(f"{dtype}: import numpy {t_numpy - start:.3f} s, import fusedense {t_fusedense - t_numpy:.3f} s, "
      f"load numba backend {t_backend - t_fusedense:.3f} s, first call of all 9 functions "
      f"{end - t_backend:.3f} s; backend total {end - t_fusedense:.3f} s")
