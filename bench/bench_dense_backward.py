"""Dense backward: ``dz = dy·act'(z)``, ``dW = xᵀdz``, ``db = Σdz``, ``dx = dz Wᵀ`` (shapes: conftest's grid)."""
import numpy as np

from fusedense import reference
from fusedense.activations import get_activation, resolve_alpha
from fusedense.benchmarking import numpy_user
from fusedense.benchmarking.workloads import dense_workload

GRID = {"activation": (["relu", "gelu"], ["relu", "gelu", "sigmoid"])}


def test_dense_backward(benchmark, kernels, check, system, shape, activation, dtype):
    batch, n_in, n_out = shape
    problem = dense_workload(n_in, n_out, activation).problem(batch, dtype)
    (W, b), = problem.layers()
    x, act = problem.x, get_activation(activation)
    alpha = resolve_alpha(act, None)
    y, z = reference.dense_forward(x, W, b, act, alpha)
    dy = np.random.default_rng(1).normal(size=y.shape).astype(dtype)
    if kernels is None:
        def run():
            return numpy_user.dense_backward(dy, x, W, z, activation)
    else:
        grads = np.empty_like(x), np.empty_like(W), np.empty_like(b)

        def run():
            kernels.dense_backward(dy, x, W, z, y, act.id, alpha, *grads)
            return grads
    for got, expected in zip(run(), reference.dense_backward(dy, x, W, z, y, act, alpha)):
        check(got, expected)
    benchmark.group = f"dense_backward {activation} B={batch} {n_in}x{n_out} {dtype.__name__}"
    benchmark(run)
