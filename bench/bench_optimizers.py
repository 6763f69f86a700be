"""Optimizer steps over a flat parameter buffer: SGD with momentum and Adam."""
import numpy as np

from fusedense import reference
from fusedense.benchmarking import numpy_user

LR, MOMENTUM = 1e-3, 0.9
GRID = {
    # the 784-128-64-10 MLP; 1M; a 4096×4096 layer
    "n_params": ([109_514], [109_514, 1_000_000, 4096 * 4096 + 4096]),
    "optimizer": (["sgd", "adam"], ["sgd", "adam"]),
}


def _step(kernels, optimizer, params, grads, n_params, dtype):
    """One in-place update of ``params`` by ``system``, as a zero-argument callable."""
    if optimizer == "sgd":
        velocity = np.zeros(n_params, dtype)
        if kernels is None:
            return lambda: numpy_user.sgd_momentum(params, grads, velocity, LR, MOMENTUM)
        return lambda: kernels.sgd_step(params, grads, velocity, LR, MOMENTUM, False, 0.0)
    if kernels is None:
        adam = numpy_user.Adam([params], lr=LR)
        return lambda: adam.step([params], [grads])
    m, v = np.zeros(n_params, dtype), np.zeros(n_params, dtype)
    return lambda: kernels.adam_step(params, grads, m, v, 1, LR, 0.9, 0.999, 1e-8, 0.0, False)


def test_optimizer_step(benchmark, kernels, check, system, optimizer, n_params, dtype):
    rng = np.random.default_rng(0)
    params, grads = rng.normal(size=n_params).astype(dtype), rng.normal(size=n_params).astype(dtype)
    expected = params.copy()
    zeros = np.zeros_like(params)
    if optimizer == "sgd":
        reference.sgd_step(expected, grads, zeros.copy(), LR, MOMENTUM)
    else:
        reference.adam_step(expected, grads, zeros.copy(), zeros.copy(), 1, LR)
    run = _step(kernels, optimizer, params, grads, n_params, dtype)
    run()
    check(params, expected)
    benchmark.group = f"{optimizer}_step n={n_params} {dtype.__name__}"
    benchmark(run)
