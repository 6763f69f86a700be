"""Memory: many repeated calls of every op leave the resident set size flat.

A leak of one output array per call would grow RSS by (calls × output size); the shapes and
call counts below make that at least 5× the allowed growth, while the allowance stays generous
enough for allocator caches and arenas (which settle during the warm-up calls).
"""
import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, abi
from fusedense.layout import make_layout

from support import MB, make_hyper, rss, record


def every_op(backend, B, n):
    """One call of each public op (and the backend's train step) on (B, n) data; every output is
    at least B·n floats."""
    rng = np.random.default_rng(0)
    x, W, b = rng.normal(size=(B, n)), rng.normal(size=(n, n)) / n, rng.normal(size=n)
    dy = rng.normal(size=(B, n))
    labels = rng.integers(0, n, B)
    layout, alphas, n_params = make_layout([n, n, n], ["gelu", "softmax"])
    params, grads = rng.normal(size=n_params) * 0.1, np.zeros(n_params)
    m, v, state = np.zeros(n_params), np.zeros(n_params), np.zeros((2, n_params))
    hyper = make_hyper("adam", lr=1e-4)
    kernels = _backends.load(backend)

    def once():
        y, z = fd.dense(x, W, b, activation="gelu", backend=backend, return_preactivation=True)
        fd.dense_grad(dy, x, W, z=z, activation="gelu", backend=backend)
        fd.activation_grad(dy, z=fd.activate(z, "elu", backend=backend), activation="tanh", backend=backend)
        fd.mlp_forward(x, params, layout, alphas, backend=backend)
        fd.softmax_cross_entropy(z, labels, backend=backend)
        fd.sgd_step(params, grads, m, lr=1e-6, momentum=0.5, backend=backend)
        fd.adam_step(params, grads, m, v, 1, lr=1e-6, backend=backend)
        kernels.mlp_train_step(x, labels, params, grads, state, record(layout, alphas), abi.LOSS_SPARSE_XENT, hyper)
    return once


@pytest.mark.parametrize("size, calls, allowed", [
    ("small", 12_500, 8 * MB),  # 10^5 calls of (8, 32) float64: 2 KB per output, ≥ 200 MB if leaked
    ("large", 125, 24 * MB),  # 10^3 calls of (128, 384) float64: 384 KB per output, ≥ 380 MB if leaked
])
def test_repeated_calls_keep_memory_flat(backend, size, calls, allowed):
    once = every_op(backend, *{"small": (8, 32), "large": (128, 384)}[size])
    for _ in range(max(calls // 10, 3)):  # warm-up: compile, fill allocator caches
        once()
    before = rss()
    for _ in range(calls):
        once()
    grown = rss() - before
    assert grown < allowed, f"RSS grew by {grown / MB:.1f} MB over {calls} rounds of every op"
