"""Threads: concurrent calls are independent, compiled kernels release the GIL, and the thread
count set by fd.set_num_threads reaches every pool, from any Python thread."""
import os
import sys
import threading
import time

import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, abi
from fusedense.activations import get_activation
from fusedense.layout import make_layout

from support import assert_close, make_hyper, run_in_threads, record

N_THREADS = 4


def workload(seed, backend):
    """A different mix of ops per thread (shapes from batch 1 to a blocked/BLAS size)."""
    rng = np.random.default_rng(seed)
    dtype = (np.float32, np.float64)[seed % 2]
    B, n_in, n_out = [(1, 7, 3), (33, 65, 17), (256, 300, 200), (129, 64, 130)][seed % 4]
    x, W = rng.normal(size=(B, n_in)).astype(dtype), rng.normal(size=(n_in, n_out)).astype(dtype)
    b, dy = rng.normal(size=n_out).astype(dtype), rng.normal(size=(B, n_out)).astype(dtype)
    layout, alphas, n = make_layout([n_in, 32, n_out], ["gelu", "softmax"])
    params = (rng.normal(size=n) * 0.1).astype(dtype)
    labels = rng.integers(0, n_out, B)

    def job(repeats=5):
        out = []
        for _ in range(repeats):
            y, z = fd.dense(x, W, b, activation="silu", backend=backend, return_preactivation=True)
            out += [y, z, *fd.dense_grad(dy, x, W, z=z, activation="silu", backend=backend),
                    fd.mlp_forward(x, params, layout, alphas, backend=backend),
                    fd.softmax_cross_entropy(z, labels, backend=backend)[1]]
        return out
    return job


def test_concurrent_calls_give_exactly_the_sequential_results(backend):
    jobs = [workload(seed, backend) for seed in range(N_THREADS)]
    sequential = [job() for job in jobs]
    for concurrent in (run_in_threads(jobs), run_in_threads(jobs)):
        for seq, conc in zip(sequential, concurrent):
            for a, b in zip(seq, conc, strict=True):
                np.testing.assert_array_equal(a, b)


def kernel_calls(backend, dtype=np.float32):
    """One long call per kernel (tens of ms), arguments prepared in advance so that calling it
    runs no Python that could release the GIL before the kernel does."""
    rng = np.random.default_rng(0)
    kernels = _backends.load(backend)
    x = rng.normal(size=(1024, 512)).astype(dtype)
    W = (rng.normal(size=(512, 512)) * 0.05).astype(dtype)
    b, y, z = np.zeros(512, dtype), np.empty((1024, 512), dtype), np.empty((1024, 512), dtype)
    dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty_like(b)
    layout, alphas, n = make_layout([512, 512, 512, 512], ["relu", "tanh", "softmax"])
    params, grads = (rng.normal(size=n) * 0.05).astype(dtype), np.zeros(n, dtype)
    state = np.zeros((2, n), dtype)
    labels = rng.integers(0, 512, 1024)
    hyper = make_hyper("adam", lr=1e-3)
    gelu = get_activation("gelu").id
    big = rng.normal(size=(4096, 1024)).astype(dtype)
    return {
        "dense_forward": lambda: kernels.dense_forward(x, W, b, gelu, 0.0, y, z),
        "dense_backward": lambda: kernels.dense_backward(y, x, W, z, None, gelu, 0.0, dx, dW, db),
        "mlp_forward": lambda: kernels.mlp_forward(x, params, record(layout, alphas), y),
        "mlp_train_step": lambda: kernels.mlp_train_step(x, labels, params, grads, state, record(layout, alphas), abi.LOSS_SPARSE_XENT, hyper),
        "activation_forward": lambda: kernels.activation_forward(big, gelu, 0.0, big.copy()),
    }


def gil_released_during(call, seconds=0.5) -> bool:
    """Whether ``call`` gives up the GIL while it runs. Not a timing test: with a switch interval
    of 1000 s the interpreter never takes the GIL from a running thread, so the main thread
    (blocked starting the worker) runs again only when the worker gives the GIL up: inside a
    call if it releases the GIL, otherwise once the worker has finished. The main thread then
    looks at which of the two happened. The worker repeats the call (for up to ``seconds``)
    until the main thread has looked: on a loaded machine the main thread may not get a core
    within one short call, and the worker would take the GIL back first."""
    state = {"entered": False, "done": False}
    looked = threading.Event()

    def worker():
        state["entered"] = True
        deadline = time.perf_counter() + seconds
        call()
        while not looked.is_set() and time.perf_counter() < deadline:
            call()
        state["done"] = True

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        thread = threading.Thread(target=worker)
        thread.start()  # returns once the worker gives up the GIL
        seen = dict(state)  # the main thread holds the GIL from here until join()
        looked.set()
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert seen["entered"] and state["done"]
    return not seen["done"]


def test_gil_probe_tells_a_call_that_holds_the_gil():
    assert not gil_released_during(lambda: sum(range(3_000_000)))
    assert gil_released_during(lambda: threading.Event().wait(0.05))


@pytest.mark.parametrize("kernel", ["dense_forward", "dense_backward", "mlp_forward", "mlp_train_step",
                                    "activation_forward"])
def test_compiled_kernels_release_the_gil(compiled_backend, kernel):
    call = kernel_calls(compiled_backend)[kernel]
    call()  # warm up (numba compiles on the first call, holding the GIL, legitimately)
    assert gil_released_during(call), f"{compiled_backend} {kernel} held the GIL for the whole call"


def pool_size(backend):
    """The thread count the backend's own pool will use for a call made from this thread."""
    if backend == "cython":
        from fusedense._kernels import activations
        return activations.get_num_threads()
    if backend == "numba":
        import numba
        return numba.get_num_threads()
    return fd.get_num_threads()  # numpy: nothing of ours to configure


@pytest.mark.parametrize("n", [1, 2])
def test_set_num_threads_reaches_the_backend_from_any_thread(backend, n):
    x, W = np.ones((64, 32)), np.ones((32, 16))
    previous = fd.set_num_threads(n)
    try:
        def call_and_report():
            fd.dense(x, W, backend=backend)  # a call from this thread applies the count if it must
            return pool_size(backend)
        assert call_and_report() == n
        assert run_in_threads([call_and_report] * 2) == [n, n]
    finally:
        fd.set_num_threads(previous)
    assert fd.get_num_threads() == previous


def test_results_do_not_depend_on_the_thread_count(backend, dtype):
    rng = np.random.default_rng(3)
    x, W, b = rng.normal(size=(300, 257)), rng.normal(size=(257, 130)) / 16, rng.normal(size=130)
    layout, alphas, n = make_layout([257, 64, 10], ["relu", "softmax"])
    x, W, b, params, dy = (a.astype(dtype) for a in (x, W, b, rng.normal(size=n) * 0.1, rng.normal(size=(300, 130))))

    def compute():
        y, z = fd.dense(x, W, b, activation="gelu", backend=backend, return_preactivation=True)
        return [y, *fd.dense_grad(dy, x, W, z=z, activation="gelu", backend=backend),
                fd.mlp_forward(x, params, layout, alphas, backend=backend)]

    previous = fd.set_num_threads(1)
    try:
        one = compute()
        fd.set_num_threads(2)
        two = compute()
    finally:
        fd.set_num_threads(previous)
    for a, b_ in zip(one, two, strict=True):
        assert_close(a, b_, dtype, 16)


def test_threads_limited_sets_fusedense_and_blas_pools_then_restores_them():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fusedense.threads import threads_limited
    if os.cpu_count() < 2:
        pytest.skip("needs 2 cores: a BLAS pool may not grow past the machine's cores")

    def counts():
        blas = {pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"}
        assert blas, "NumPy's BLAS pool is visible to threadpoolctl"
        return fd.get_num_threads(), blas

    before = counts()
    outer, inner = (1, 2) if before[0] != 1 else (2, 1)
    with pytest.raises(RuntimeError, match="inside"):
        with threads_limited(outer):
            assert counts() == (outer, {outer})
            with threads_limited(inner):
                assert counts() == (inner, {inner})
            assert counts() == (outer, {outer})
            raise RuntimeError("inside")
    assert counts() == before
