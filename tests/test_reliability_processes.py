"""Threads and processes around a running kernel, on every engine, each case in a subprocess (a
crash or a hang must fail the test, not kill pytest): a forked child predicts and trains after
the parent's parallel paths ran; the thread count changed from another thread while generation
and prediction run changes nothing but speed."""
import subprocess
import sys
import textwrap

import pytest


def _run(code, timeout=240):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def test_a_forked_child_predicts_and_trains_after_the_parallel_paths_ran(backend):
    out = _run(f"""
        import os, time
        import numpy as np
        import fusedense as fd
        fd.set_num_threads(2)
        model = fd.Sequential([fd.Dense(512, activation="relu", input_shape=(256,)),
                               fd.Dense(10, activation="softmax")], backend={backend!r}, seed=0)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(2048, 256)).astype(np.float32), rng.integers(0, 10, 2048)
        model.fit(x, y, batch_size=512, epochs=1, verbose=0)  # the parent's thread pools are warm
        W = rng.normal(size=(256, 1024)).astype(np.float32)  # 64 rows over 1 MB: split over columns
        dense = lambda: fd.dense(x[:64], W, activation="relu", backend={backend!r})
        expected, expected_dense = model.predict(x, verbose=0), dense()  # column-split on 2 threads
        pid = os.fork()
        if pid == 0:
            # the child runs one thread, where this product goes to BLAS: another summation order
            # than the parent's column split (float32 sums of 256 terms, ~4e-5 apart)
            ok = (np.array_equal(model.predict(x, verbose=0), expected)
                  and np.allclose(dense(), expected_dense, rtol=1e-4, atol=1e-4))
            fd.set_num_threads(2)  # a count above one is accepted in the child too
            model.fit(x, y, batch_size=512, epochs=1, verbose=0)
            os._exit(0 if ok and np.isfinite(model.predict(x, verbose=0)).all() else 3)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print("child", os.waitstatus_to_exitcode(status))
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            print("child hung")
    """)
    assert out.strip() == "child 0"


def test_the_thread_count_changed_from_another_thread_mid_call_changes_no_result(backend):
    _run(f"""
        import threading
        import numpy as np
        import fusedense as fd
        lm = fd.EmbeddingMLP(64, 32, 4, [512, 64], backend={backend!r}, random_state=0)
        tokens = np.random.default_rng(0).integers(0, 64, (600, 4))
        fd.set_num_threads(1)
        expected = lm.generate(n=64, max_len=30, seed=1), lm.predict(tokens)
        stop = threading.Event()
        def flip():  # every count up to the documented bound, as fast as it can
            counts = [1, 2, fd.threads.max_threads(), 3]
            i = 0
            while not stop.is_set():
                fd.set_num_threads(counts[i % len(counts)])
                i += 1
        flipper = threading.Thread(target=flip)
        flipper.start()
        try:
            for _ in range(40):
                generated, predicted = lm.generate(n=64, max_len=30, seed=1), lm.predict(tokens)
                # results are reproducible per thread count, so across counts the sequences may
                # differ where rounding moves a logit across a sampling boundary: check them whole
                assert len(generated) == 64
                assert all(len(seq) <= 30 and ((seq >= 0) & (seq < 64)).all() for seq in generated)
                np.testing.assert_allclose(predicted, expected[1], rtol=1e-4, atol=1e-5)
        finally:
            stop.set()
            flipper.join()
    """)
