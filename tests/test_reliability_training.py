"""Training is transactional per step, on every engine: a non-finite loss changes nothing, an
interrupt leaves the model at a step boundary, a second training thread is refused."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends

ENGINES = _backends.backends()


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n)


def _model(backend, optimizer="adam"):
    model = fd.Sequential([fd.Dense(16, activation="relu", input_shape=(6,)), fd.Dense(3, activation="softmax")],
                          backend=backend, seed=0)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_batch_leaves_the_model_as_it_was_and_names_epoch_and_batch(backend, bad):
    x, y = _data()
    model, replay = _model(backend), _model(backend)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    net = model.network
    x_bad = x.copy()
    x_bad[40, 2] = bad  # in the third batch of 16
    with pytest.raises(FloatingPointError, match=r"epoch 1/1, batch 3 of 4: .*which was not applied"):
        model.fit(x_bad, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert net.step == 4 + 2  # the first fit's 4 steps and the 2 batches before the bad one
    replay.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    replay.fit(x[:32], y[:32], batch_size=16, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(net.params, replay.network.params)
    np.testing.assert_array_equal(net.opt_state, replay.network.opt_state)


@pytest.mark.parametrize("backend", ENGINES)
def test_a_diverging_step_is_refused_and_changes_nothing(backend):
    x, y = _data()
    net = fd.MLP([6, 16, 3], ["relu", "softmax"], random_state=0, backend=backend)
    net.set_optimizer(fd.optimizers.SGD(learning_rate=1.0))
    net.params[:] = 1e19  # logits overflow float32: the loss is inf
    before = net.params.copy(), net.opt_state.copy()
    with pytest.raises(FloatingPointError, match="optimizer step 1, which was not applied"):
        net.train_step(x, y, loss="sparse_categorical_crossentropy")
    assert net.step == 0
    np.testing.assert_array_equal(net.params, before[0])
    np.testing.assert_array_equal(net.opt_state, before[1])


@pytest.mark.parametrize("backend", ENGINES)
def test_an_interrupted_fit_leaves_the_step_count_matching_the_parameters(backend):
    """SIGINT lands somewhere inside a long fit (in a subprocess: pytest must not see it); the
    parameters must equal a replay of exactly ``step`` updates from the same start."""
    script = textwrap.dedent(f"""
        import os, signal, threading, numpy as np, fusedense as fd
        # a runner that started pytest in the background (a non-interactive shell's `&`, nohup)
        # passes SIGINT down ignored, and Python then installs no KeyboardInterrupt handler
        signal.signal(signal.SIGINT, signal.default_int_handler)
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(64, 6)).astype(np.float32), rng.integers(0, 3, 64)
        def model():
            net = fd.MLP([6, 16, 3], ["relu", "softmax"], random_state=0, backend={backend!r})
            net.set_optimizer("adam")
            return net
        net = model()
        net.train_epoch(x[:2], y[:2], 0, 1)  # compiled (numba) before the clock starts
        interrupted = threading.Event()
        def interrupt():  # again every 0.3 s: Python drops one that lands in a finalizer (gc)
            while not interrupted.wait(0.3):
                os.kill(os.getpid(), signal.SIGINT)
        threading.Thread(target=interrupt, daemon=True).start()
        try:
            while True:
                net.train_epoch(x, y, 0, 1)
        except KeyboardInterrupt:
            interrupted.set()
        replay = model()
        replay.train_epoch(x[:2], y[:2], 0, 1)
        for i in range(net.step - 2):
            replay.fused_step(x[i % 64:i % 64 + 1], y[i % 64:i % 64 + 1].astype(np.int64), 0)
        assert net.step > 0
        assert np.array_equal(replay.params, net.params), net.step
        assert np.array_equal(replay.opt_state, net.opt_state), net.step
        print("ok", net.step)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("ok"), (done.returncode, done.stdout[-500:],
                                                                     done.stderr[-2000:])


@pytest.mark.parametrize("backend", ENGINES)
def test_a_second_training_thread_is_refused_and_no_step_is_lost(backend):
    x, y = _data(4096)
    net = fd.MLP([6, 64, 3], ["relu", "softmax"], random_state=0, backend=backend)
    net.set_optimizer("sgd")
    started, outcomes = threading.Event(), []

    def train():
        try:
            started.set()
            net.train_epoch(x, y.astype(np.int64), 0, 1)
            outcomes.append("trained")
        except RuntimeError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=train) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trained = outcomes.count("trained")
    assert trained >= 1
    assert all(o == "trained" or "being trained by another thread" in o for o in outcomes)
    assert net.step == trained * 4096


def test_set_num_threads_rejects_counts_past_its_bound_and_changes_nothing():
    before = fd.get_num_threads()
    limit = fd.threads.max_threads()
    for bad in (0, limit + 1, 100000, 2**33):
        with pytest.raises(ValueError, match=r"n: expected an integer in \[1, "):
            fd.set_num_threads(bad)
        assert fd.get_num_threads() == before
    previous = fd.set_num_threads(limit)
    try:
        assert fd.get_num_threads() == limit
        fd.dense(np.ones((256, 64), np.float32), np.ones((64, 64), np.float32))  # runs with the largest count
    finally:
        fd.set_num_threads(previous)


def test_fusedense_num_threads_out_of_range_is_a_clear_error():
    env = dict(os.environ, FUSEDENSE_NUM_THREADS="100000")
    done = subprocess.run([sys.executable, "-c", "import fusedense as fd; fd.get_num_threads()"],
                          env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "FUSEDENSE_NUM_THREADS: expected an integer in [1, " in done.stderr
