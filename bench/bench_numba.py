"""Benchmarks of the numba backend against NumPy as a user would write it, fusedense's numpy
backend, and the cython backend when it is built. Each implementation's answer is checked
against the reference before it is timed.

Workloads: the seed MLP 784→128 relu→64 relu→10 softmax, inference at batch 1, 32, 1024, and a
training step (forward, softmax cross-entropy, backward, Adam) at batch 32 and 256.

    PYTHONPATH=src python -m pytest bench/bench_numba.py --benchmark-group-by=param:workload
    PYTHONPATH=src python bench/bench_numba.py      # alternating blocks: median µs and ratios

The backends are called through the kernel interface with preallocated outputs (what a model
does in a loop), so the times are the kernels' own, not the functional API's validation.
"""
from __future__ import annotations

import sys
import timeit

import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, abi, reference
from fusedense.layout import layer_views, make_layout

SIZES = [784, 128, 64, 10]
ACTIVATIONS = ["relu", "relu", "softmax"]
WORKLOADS = ["infer-b1", "infer-b32", "infer-b1024", "train-b32", "train-b256"]
IMPLEMENTATIONS = ["numpy-user"] + [f"fd-{name}" for name in reversed(fd.backends())]
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def numpy_user_infer(x, layers):
    (W1, b1), (W2, b2), (W3, b3) = layers
    return _softmax(np.maximum(np.maximum(x @ W1 + b1, 0) @ W2 + b2, 0) @ W3 + b3)


def numpy_user_train_step(x, labels, layers, moments, step):
    """Forward, softmax cross-entropy, backward and Adam, as in a NumPy tutorial."""
    (W1, b1), (W2, b2), (W3, b3) = layers
    B = x.shape[0]
    h1 = np.maximum(x @ W1 + b1, 0)
    h2 = np.maximum(h1 @ W2 + b2, 0)
    p = _softmax(h2 @ W3 + b3)
    rows = np.arange(B)
    loss = -np.log(p[rows, labels]).mean()
    d3 = p
    d3[rows, labels] -= 1
    d3 /= B
    d2 = (d3 @ W3.T) * (h2 > 0)
    d1 = (d2 @ W2.T) * (h1 > 0)
    grads = [h2.T @ d3, d3.sum(0), h1.T @ d2, d2.sum(0), x.T @ d1, d1.sum(0)]
    params = [W3, b3, W2, b2, W1, b1]
    for param, g, (m, v) in zip(params, grads, moments):
        m *= BETA1
        m += (1 - BETA1) * g
        v *= BETA2
        v += (1 - BETA2) * g * g
        param -= LR * (m / (1 - BETA1**step)) / (np.sqrt(v / (1 - BETA2**step)) + EPS)
    return loss


class Workload:
    """Data for one workload and dtype, and a ``run`` callable per implementation."""

    def __init__(self, workload, dtype):
        kind, batch = workload.split("-b")
        self.train, self.batch, self.dtype = kind == "train", int(batch), np.dtype(dtype)
        rng = np.random.default_rng(0)
        self.layout, self.alphas, n_params = make_layout(SIZES, ACTIVATIONS)
        self.params = np.empty(n_params, self.dtype)
        for (W, b), fan_in in zip(layer_views(self.params, self.layout), SIZES):
            W[...] = rng.normal(size=W.shape) / np.sqrt(fan_in)
            b[...] = rng.normal(size=b.shape) * 0.1
        self.x = rng.normal(size=(self.batch, SIZES[0])).astype(self.dtype)
        self.labels = rng.integers(0, SIZES[-1], self.batch)
        self.hyper = np.zeros(abi.N_HYPER)
        self.hyper[[abi.H_OPTIMIZER, abi.H_LR, abi.H_BETA1, abi.H_BETA2, abi.H_EPS, abi.H_STEP]] = (
            abi.OPT_ADAM, LR, BETA1, BETA2, EPS, 1)

    def expected(self):
        if not self.train:
            return reference.mlp_forward(self.x, self.params, self.layout, self.alphas)
        params, state = self.params.copy(), np.zeros((2, self.params.size), self.dtype)
        loss, _ = reference.mlp_train_step(self.x, self.labels, params, self.layout, self.alphas,
                                           state, abi.LOSS_SPARSE_XENT, self.hyper)
        return loss, params

    def runner(self, implementation):
        """(run, result): ``run()`` does one call on fresh copies of the parameters;
        ``result()`` is what to compare with ``expected()`` after the first call."""
        params = self.params.copy()
        state = np.zeros((2, params.size), self.dtype)
        x, labels, layout, alphas = self.x, self.labels, self.layout, self.alphas
        if implementation == "numpy-user":
            layers = layer_views(params, layout)
            if not self.train:
                box = [None]
                run = lambda: box.__setitem__(0, numpy_user_infer(x, layers))  # noqa: E731
                return run, lambda: box[0]
            per_layer = zip(layer_views(state[0], layout), layer_views(state[1], layout))
            moments = [mv for pair in reversed(list(per_layer)) for mv in zip(*pair)]  # W3, b3, W2, ...
            loss = [None]

            def run():
                loss[0] = numpy_user_train_step(x, labels, layers, moments, 1)
            return run, lambda: (loss[0], params)
        backend = _backends.load(implementation[len("fd-"):])
        if not self.train:
            out = np.empty((self.batch, SIZES[-1]), self.dtype)
            return (lambda: backend.mlp_forward(x, params, layout, alphas, out)), lambda: out
        grads, loss, hyper = np.empty_like(params), [None], self.hyper
        run = lambda: loss.__setitem__(0, backend.mlp_train_step(  # noqa: E731
            x, labels, params, grads, state, layout, alphas, abi.LOSS_SPARSE_XENT, hyper))
        return run, lambda: (loss[0], params)

    def checked_runner(self, implementation):
        run, result = self.runner(implementation)
        run()
        rtol = 2e-4 if self.dtype == np.float32 else 1e-9
        got, want = result(), self.expected()
        if self.train:
            assert got[0] == pytest.approx(float(want[0]), rel=rtol), implementation
            got, want = got[1], want[1]
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=implementation)
        return run


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("precision", ["float32", "float64"])  # not "dtype": conftest's grid owns that
@pytest.mark.parametrize("workload", WORKLOADS)
def test_seed_mlp(benchmark, workload, precision, implementation):
    run = Workload(workload, precision).checked_runner(implementation)
    benchmark(run)


def _median_table(dtypes=("float64", "float32"), blocks=7):
    """Times the implementations in alternating blocks (the machine is shared and noisy) and
    prints the median µs per call and the ratio NumPy-as-a-user / implementation."""
    print(f"{'workload':<12} {'dtype':<8} " + " ".join(f"{name:>16}" for name in IMPLEMENTATIONS))
    for workload in WORKLOADS:
        for dtype in dtypes:
            w = Workload(workload, dtype)
            runs = {name: w.checked_runner(name) for name in IMPLEMENTATIONS}
            one = min(timeit.repeat(runs["numpy-user"], number=1, repeat=3))
            number = max(1, int(0.05 / one))  # ~50 ms per block
            times = {name: [] for name in runs}
            for _ in range(blocks):
                for name, run in runs.items():
                    times[name].append(min(timeit.repeat(run, number=number, repeat=2)) / number * 1e6)
            median = {name: float(np.median(t)) for name, t in times.items()}
            base = median["numpy-user"]
            cells = " ".join(f"{median[n]:>8.1f} ({base / median[n]:>4.1f}x)" for n in IMPLEMENTATIONS)
            print(f"{workload:<12} {dtype:<8} {cells}", flush=True)


if __name__ == "__main__":
    _median_table(*([sys.argv[1:]] if len(sys.argv) > 1 else []))
