"""Kernel benchmarks: each workload timed for every available backend and for NumPy written
as a user would write it ("numpy_user"), in the same run. Every implementation's answer is
checked against fusedense.reference before it is timed.

    PYTHONPATH=src python -m pytest bench/bench_kernels.py --benchmark-json=bench.json
    python bench/ratios.py bench.json          # median µs and speed-up vs numpy_user per group

Implementations: "numpy_user"; "kernel:<backend>" calls the backend function directly with
pre-validated arrays (what the models' fast path does); "fd:<backend>" goes through the public
functional API (validation included). float32 throughout.
"""
import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, abi, reference

DTYPE = np.float32
SEED_SIZES, SEED_ACTS = [784, 128, 64, 10], ["relu", "relu", "softmax"]
FFN_SIZES, FFN_ACTS = [1024, 4096, 1024], ["gelu", "identity"]
TOL = dict(rtol=1e-4, atol=1e-5)

KERNELS = [f"kernel:{name}" for name in fd.backends()]
FUNCTIONAL = [f"fd:{name}" for name in fd.backends()]


def _network(sizes, acts, seed=0):
    rng = np.random.default_rng(seed)
    layout, alphas, n = fd.make_layout(sizes, acts)
    params = np.empty(n, DTYPE)
    for W, b in fd.layer_views(params, layout):
        W[...] = rng.standard_normal(W.shape) / np.sqrt(W.shape[0])
        b[...] = rng.standard_normal(b.shape) * 0.1
    return layout, alphas, params


# --- NumPy as a user writes it ----------------------------------------------------------------

def _numpy_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _numpy_gelu(z):
    return 0.5 * z * (1 + np.tanh(0.7978845608028654 * (z + 0.044715 * z**3)))


def numpy_seed_mlp(x, W1, b1, W2, b2, W3, b3):
    h = np.maximum(x @ W1 + b1, 0)
    h = np.maximum(h @ W2 + b2, 0)
    return _numpy_softmax(h @ W3 + b3)


def numpy_ffn(x, W1, b1, W2, b2):
    return _numpy_gelu(x @ W1 + b1) @ W2 + b2


class NumpyTrainer:
    """A seed-MLP training step (forward, softmax cross-entropy, backward, Adam) in NumPy."""

    def __init__(self, weights, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.weights = [w.copy() for w in weights]  # W1, b1, W2, b2, W3, b3
        self.m = [np.zeros_like(w) for w in self.weights]
        self.v = [np.zeros_like(w) for w in self.weights]
        self.lr, self.beta1, self.beta2, self.eps, self.t = lr, beta1, beta2, eps, 0

    def step(self, x, labels):
        W1, b1, W2, b2, W3, b3 = self.weights
        z1 = x @ W1 + b1
        h1 = np.maximum(z1, 0)
        z2 = h1 @ W2 + b2
        h2 = np.maximum(z2, 0)
        logits = h2 @ W3 + b3
        p = _numpy_softmax(logits)
        B = x.shape[0]
        loss = -np.log(p[np.arange(B), labels]).mean()
        dz3 = p
        dz3[np.arange(B), labels] -= 1
        dz3 /= B
        dW3, db3 = h2.T @ dz3, dz3.sum(axis=0)
        dz2 = (dz3 @ W3.T) * (z2 > 0)
        dW2, db2 = h1.T @ dz2, dz2.sum(axis=0)
        dz1 = (dz2 @ W2.T) * (z1 > 0)
        dW1, db1 = x.T @ dz1, dz1.sum(axis=0)
        self.t += 1
        for w, g, m, v in zip(self.weights, (dW1, db1, dW2, db2, dW3, db3), self.m, self.v):
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            m_hat = m / (1 - self.beta1**self.t)
            v_hat = v / (1 - self.beta2**self.t)
            w -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
        return loss


def _flat_weights(params, layout):
    return [a for W, b in fd.layer_views(params, layout) for a in (W, b)]


# --- the workloads ---------------------------------------------------------------------------

def _forward_callable(impl, x, layout, alphas, params, numpy_user):
    out = np.empty((x.shape[0], int(layout[-1, 2])), DTYPE)
    if impl == "numpy_user":
        return numpy_user
    kind, name = impl.split(":")
    if kind == "kernel":
        kernel = _backends.load(name).mlp_forward
        return lambda: (kernel(x, params, layout, alphas, out), out)[1]
    return lambda: fd.mlp_forward(x, params, layout, alphas, backend=name)


@pytest.mark.parametrize("impl", ["numpy_user"] + KERNELS + FUNCTIONAL)
@pytest.mark.parametrize("batch", [1, 32, 1024])
def test_seed_mlp_inference(benchmark, impl, batch):
    benchmark.group = f"seed MLP 784-128-64-10 inference, batch {batch}"
    layout, alphas, params = _network(SEED_SIZES, SEED_ACTS)
    x = np.random.default_rng(1).standard_normal((batch, 784)).astype(DTYPE)
    weights = _flat_weights(params, layout)
    run = _forward_callable(impl, x, layout, alphas, params, lambda: numpy_seed_mlp(x, *weights))
    np.testing.assert_allclose(run(), reference.mlp_forward(x, params, layout, alphas), **TOL)
    benchmark(run)


@pytest.mark.parametrize("impl", ["numpy_user"] + KERNELS + FUNCTIONAL)
def test_ffn_gelu_inference(benchmark, impl):
    benchmark.group = "FFN 1024-4096 gelu-1024, batch 64"
    layout, alphas, params = _network(FFN_SIZES, FFN_ACTS)
    x = np.random.default_rng(1).standard_normal((64, 1024)).astype(DTYPE)
    weights = _flat_weights(params, layout)
    run = _forward_callable(impl, x, layout, alphas, params, lambda: numpy_ffn(x, *weights))
    np.testing.assert_allclose(run(), reference.mlp_forward(x, params, layout, alphas), **TOL)
    benchmark(run)


@pytest.mark.parametrize("impl", ["numpy_matmul_only", "numpy_user"] + KERNELS)
def test_dense_relu_large(benchmark, impl):
    """The epilogue's cost: dense + relu against np.matmul alone (the bar is ≤ 1.05×)."""
    benchmark.group = "dense relu 2048x1024 -> 1024"
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2048, 1024)).astype(DTYPE)
    W = (rng.standard_normal((1024, 1024)) / 32).astype(DTYPE)
    b = rng.standard_normal(1024).astype(DTYPE)
    y = np.empty((2048, 1024), DTYPE)
    expected = reference.dense_forward(x, W, b, fd.activations.get_activation("relu"), 0.0)[0]
    if impl == "numpy_matmul_only":
        run = lambda: np.matmul(x, W)  # noqa: E731
        np.testing.assert_allclose(np.maximum(run() + b, 0), expected, **TOL)
    else:
        if impl == "numpy_user":
            run = lambda: np.maximum(x @ W + b, 0)  # noqa: E731
        else:
            kernel = _backends.load(impl.split(":")[1]).dense_forward
            run = lambda: (kernel(x, W, b, 1, 0.0, y, None), y)[1]  # noqa: E731
        np.testing.assert_allclose(run(), expected, **TOL)
    benchmark(run)


def _adam_hyper(step):
    hyper = np.zeros(abi.N_HYPER)
    hyper[[abi.H_OPTIMIZER, abi.H_LR, abi.H_BETA1, abi.H_BETA2, abi.H_EPS, abi.H_STEP]] = (
        abi.OPT_ADAM, 1e-3, 0.9, 0.999, 1e-8, step)
    return hyper


@pytest.mark.parametrize("impl", ["numpy_user"] + KERNELS)
@pytest.mark.parametrize("batch", [32, 256])
def test_seed_mlp_train_step(benchmark, impl, batch):
    benchmark.group = f"seed MLP train step (fwd + xent + bwd + Adam), batch {batch}"
    layout, alphas, params = _network(SEED_SIZES, SEED_ACTS)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((batch, 784)).astype(DTYPE)
    labels = rng.integers(0, 10, batch)
    # the answer after one step from the same start, compared with the reference
    p_ref, state_ref = params.copy(), np.zeros((2, params.size), DTYPE)
    loss_ref, _ = reference.mlp_train_step(x, labels, p_ref, layout, alphas, state_ref,
                                           abi.LOSS_SPARSE_XENT, _adam_hyper(1))
    if impl == "numpy_user":
        trainer = NumpyTrainer(_flat_weights(params, layout))
        loss = trainer.step(x, labels)
        got = np.concatenate([w.ravel() for w in trainer.weights])
        run = lambda: trainer.step(x, labels)  # noqa: E731
    else:
        kernel = _backends.load(impl.split(":")[1]).mlp_train_step
        p, grads, state = params.copy(), np.empty_like(params), np.zeros((2, params.size), DTYPE)
        hyper = _adam_hyper(1)
        loss = kernel(x, labels, p, grads, state, layout, alphas, abi.LOSS_SPARSE_XENT, hyper)
        got = p.copy()

        def run():
            hyper[abi.H_STEP] += 1
            return kernel(x, labels, p, grads, state, layout, alphas, abi.LOSS_SPARSE_XENT, hyper)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    np.testing.assert_allclose(got, p_ref, **TOL)
    benchmark(run)
