"""Every parallel path at every thread count: right (against the NumPy oracle), the same bits
from call to call at a given count (a forked child: tests/test_reliability_processes.py).

The Cython engine splits a layer's product of up to PACKED_MAX_ROWS rows over output columns
(thread_policy.column_slices), a whole network's small-weight layers over row blocks, and the
training step's forward over row blocks and its backward over tasks; the shapes below reach
each path, odd widths included (a slice that is not a multiple of the vector width, a last
slice wider than the others). Results are compared with a float64 product or the oracle, and
with a second call at the same thread count (to the bit)."""

import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, abi, reference, tuning
from fusedense.layout import make_layout

from support import assert_close, make_hyper, record

THREAD_COUNTS = (1, 2, 3, 4)
#: (batch, fan_in, fan_out): batch 1 streamed and split; mid batches packed and split (above
#: tuning's SPLIT_MIN_WORK); an odd width; a batch past PACKED_MAX_ROWS (BLAS on its threads)
DENSE_SHAPES = [(1, 1024, 1024), (1, 700, 1500), (5, 512, 1000), (64, 1024, 1030), (200, 600, 777),
                (300, 512, 512)]


@pytest.fixture(params=THREAD_COUNTS, ids=lambda n: f"{n}threads")
def threads(request):
    previous = fd.set_num_threads(min(request.param, fd.threads.max_threads()))
    yield request.param
    fd.set_num_threads(previous)


def test_the_shapes_reach_the_split_path():
    # the shapes above must stay above the threshold when the tuning table changes
    for batch, k, n in DENSE_SHAPES[:-1]:
        assert batch * k * n >= tuning.CYTHON["SPLIT_MIN_WORK"] and batch <= tuning.COMMON["PACKED_MAX_ROWS"]
    assert DENSE_SHAPES[-1][0] > tuning.COMMON["PACKED_MAX_ROWS"]


@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("activation", ["relu", "gelu", "softmax"])  # softmax: whole rows
def test_dense_is_right_and_repeatable_at_every_thread_count(compiled_backend, dtype, threads, shape, activation):
    batch, k, n = shape
    rng = np.random.default_rng(batch + k + n)
    x = rng.normal(size=(batch, k)).astype(dtype)
    W = (rng.normal(size=(k, n)) / np.sqrt(k)).astype(dtype)
    b = rng.normal(size=n).astype(dtype)
    y, z = fd.dense(x, W, b, activation=activation, backend=compiled_backend, return_preactivation=True)
    z_expected = x.astype(np.float64) @ W + b  # independent of the oracle: float64 product
    assert_close(z, z_expected, dtype, 2 * k)
    assert_close(y, fd.dense(x, W, b, activation=activation, backend="numpy"), dtype, 2 * k)
    again = fd.dense(x, W, b, activation=activation, backend=compiled_backend)
    np.testing.assert_array_equal(again, y)


def test_transformer_ffn_is_right_and_repeatable_at_every_thread_count(compiled_backend, dtype, threads):
    rng = np.random.default_rng(7)
    layout, alphas, n = make_layout([512, 2048, 512], ["gelu", "identity"])
    params = (rng.normal(size=n) / 40).astype(dtype)
    for batch in (1, 3, 64):
        x = rng.normal(size=(batch, 512)).astype(dtype)
        out = fd.mlp_forward(x, params, layout, alphas, backend=compiled_backend)
        assert_close(out, fd.mlp_forward(x, params, layout, alphas, backend="numpy"), dtype, 4096)
        np.testing.assert_array_equal(fd.mlp_forward(x, params, layout, alphas, backend=compiled_backend), out)


@pytest.mark.parametrize("batch", [32, 200, 256])
def test_training_step_is_right_and_repeatable_at_every_thread_count(compiled_backend, dtype, threads, batch):
    # the 784-128-64-10 network: batches 200 and 256 above TRAIN_PARALLEL_MIN_WORK (row blocks in
    # the forward, the backward's tasks over threads; 200: a last block of 8 rows), 32 below it;
    # kernel penalties on every layer (their gradient is added inside each dW task)
    work = 784 * 128 + 128 * 64 + 64 * 10
    assert 32 * work < tuning.COMMON["TRAIN_PARALLEL_MIN_WORK"] <= 200 * work
    rng = np.random.default_rng(batch)
    layout, alphas, n = make_layout([784, 128, 64, 10], ["relu", "gelu", "softmax"])
    start = (rng.normal(size=n) * 0.05).astype(dtype)
    x, labels = rng.normal(size=(batch, 784)).astype(dtype), rng.integers(0, 10, batch)
    hyper = make_hyper("adam", step=2, lr=0.01, penalty_scale=0.5)
    penalties = [[1e-3, 0.01], [0.0, 0.02], [2e-3, 0.0]]
    state0 = (rng.uniform(size=(2, n)) * 1e-3).astype(dtype)
    p64, s64 = start.astype(np.float64), state0.astype(np.float64)
    loss_ref, grads_ref = reference.mlp_train_step(x.astype(np.float64), labels, p64,
                                                   record(layout, alphas, penalties=penalties), s64,
                                                   abi.LOSS_SPARSE_XENT, hyper)
    engine = _backends.load(compiled_backend)
    results = []
    for _ in range(2):
        params, state, grads = start.copy(), state0.copy(), np.zeros_like(start)
        loss = engine.mlp_train_step(x, labels, params, grads, state, record(layout, alphas, penalties=penalties),
                                     abi.LOSS_SPARSE_XENT, hyper.copy())
        results.append((loss, params, state, grads))
    loss, params, state, grads = results[0]
    assert loss == pytest.approx(loss_ref, rel=1e-4 if dtype == np.float32 else 1e-10)
    assert_close(grads, grads_ref, dtype, 8)
    assert_close(params, p64, dtype, 8)
    assert_close(state, s64, dtype, 8)
    assert results[1][0] == loss
    for again, first in zip(results[1][1:], results[0][1:]):
        np.testing.assert_array_equal(again, first)


