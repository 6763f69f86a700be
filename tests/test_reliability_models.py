"""Reliability of the model layer (fd.MLP, fd.Sequential, save/load): hostile input to its
methods, threads, memory on the predict fast path, and files that are truncated, bit-flipped,
foreign or malicious.
"""
import gc
import os
import pickle
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest

import fusedense as fd

from support import MB, rss, run_in_threads

CLASSIFIER = dict(sizes=[6, 16, 8, 3], activations="relu", output_activation="softmax")
LOSS = "sparse_categorical_crossentropy"


def classifier(backend, dtype=np.float32, seed=0, **overrides):
    spec = {**CLASSIFIER, **overrides}
    return fd.MLP(spec["sizes"], spec["activations"], spec["output_activation"], dtype=dtype,
                  random_state=seed, backend=backend)


def data(seed=0, n=32, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(dtype), rng.integers(0, 3, n)


# --- hostile input to model methods ------------------------------------------------------------

X, LABELS = data()
NET = classifier("numpy")

# (id, call, exception, message pattern): adding a case is one line
MODEL_CASES = [
    ("predict_0d", lambda: NET.predict(np.float32(1)), ValueError, r"x: expected shape \(n_samples, 6\)"),
    ("predict_1d", lambda: NET.predict(np.ones(6)), ValueError, r"x: expected shape \(n_samples, 6\) .* got shape \(6,\)"),
    ("predict_3d", lambda: NET.predict(np.ones((2, 3, 6))), ValueError, r"x: expected shape \(n_samples, 6\)"),
    ("predict_wrong_width", lambda: NET.predict(np.ones((4, 5))), ValueError, r"got shape \(4, 5\)"),
    ("predict_empty", lambda: NET.predict(np.ones((0, 6))), ValueError, r"x: expected at least one sample"),
    ("predict_object", lambda: NET.predict(np.ones((2, 6), object)), TypeError, r"x: expected numbers, got values of dtype object"),
    ("predict_complex", lambda: NET.predict(np.ones((2, 6), complex)), TypeError, r"x: expected numbers"),
    ("predict_strings", lambda: NET.predict([["a"] * 6]), TypeError, r"x: expected numbers"),
    ("predict_batch_size_zero", lambda: NET.predict(X, batch_size=0), ValueError, r"batch_size: expected a positive integer"),
    ("predict_batch_size_float", lambda: NET.predict(X, batch_size=2.5), ValueError, r"batch_size: expected a positive integer"),
    ("train_label_too_big", lambda: classifier("numpy").train_step(X, np.full(32, 3), LOSS), ValueError,
     r"y: labels must lie in \[0, 3\), got 3"),
    ("train_label_negative", lambda: classifier("numpy").train_step(X, np.full(32, -1), LOSS), ValueError,
     r"y: labels must lie in \[0, 3\), got -1"),
    ("train_label_count", lambda: classifier("numpy").train_step(X, LABELS[:-1], LOSS), ValueError,
     r"y: expected shape \(32,\) \(one label per row\)"),
    ("train_label_fraction", lambda: classifier("numpy").train_step(X, LABELS + 0.5, LOSS), TypeError,
     r"y: expected integer class labels"),
    ("train_label_nan", lambda: classifier("numpy").train_step(X, np.full(32, np.nan), LOSS), TypeError,
     r"y: expected integer class labels"),
    ("train_x_nan_stops", lambda: classifier("numpy").train_step(np.full((32, 6), np.nan, np.float32), LABELS, LOSS),
     FloatingPointError, r"training diverged: the loss became nan"),
    ("train_targets_shape", lambda: classifier("numpy", output_activation="identity").train_step(X, np.ones((32, 2)), "mse"),
     ValueError, r"y: expected shape \(32, 3\)"),
    ("train_targets_object", lambda: classifier("numpy", output_activation="identity").train_step(X, np.ones((32, 3), object), "mse"),
     TypeError, r"y: expected numeric targets"),
    ("train_unknown_loss", lambda: classifier("numpy").train_step(X, LABELS, "hinge"), ValueError, r"hinge"),
    ("model_sizes_overflow_int64", lambda: fd.MLP([2**40, 2**40, 2]), ValueError, r"more than an int64 can index"),
    ("model_sizes_2pow40", lambda: fd.MLP([2**40, 2]), MemoryError, r"Unable to allocate"),
    ("model_size_zero", lambda: fd.MLP([6, 0, 3]), ValueError, r"sizes: every layer size must be >= 1"),
    ("model_dtype_int", lambda: fd.MLP([6, 3], dtype=np.int32), TypeError, r"dtype: expected float32 or float64"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_bad_input_to_a_model_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_predict_propagates_nan_rows_only(backend):
    net = classifier(backend)
    x = X.copy()
    x[[3, 7], 2] = np.nan
    out = net.predict(x)
    assert np.isnan(out[[3, 7]]).all() and np.isfinite(np.delete(out, [3, 7], axis=0)).all()


def test_predict_accepts_any_layout_and_number_type(backend):
    net = classifier(backend)
    expected = net.predict(X)
    wide = np.zeros((32, 12), np.float32)
    wide[:, ::2] = X
    for x in (np.asfortranarray(X), wide[:, ::2], X.astype(np.float64), X.tolist()):
        np.testing.assert_allclose(net.predict(x), expected, rtol=1e-6, atol=1e-7)
    in_batches = net.predict(X, batch_size=5)
    if backend == "numpy":  # BLAS picks its kernel (and summation order) by the number of rows
        np.testing.assert_allclose(in_batches, expected, rtol=1e-6, atol=1e-7)
    else:  # the compiled kernels sum each element in the same order whatever the batch
        np.testing.assert_array_equal(in_batches, expected)


# --- threads -------------------------------------------------------------------------------------


def train_and_predict(backend, seed):
    net = classifier(backend, seed=seed)
    x, labels = data(seed)

    def job():
        losses = [net.train_step(x, labels, LOSS) for _ in range(20)]
        return losses, net.predict(x), net.params.copy()
    return job


def test_models_in_concurrent_threads_match_sequential_runs(backend):
    sequential = [train_and_predict(backend, seed)() for seed in range(4)]
    concurrent = run_in_threads([train_and_predict(backend, seed) for seed in range(4)])
    for (losses, out, params), (losses_c, out_c, params_c) in zip(sequential, concurrent):
        assert losses == losses_c
        np.testing.assert_array_equal(out, out_c)
        np.testing.assert_array_equal(params, params_c)


def test_one_model_predicting_from_many_threads_gives_the_same_answer(backend):
    net = classifier(backend)
    expected = net.predict(X)
    for out in run_in_threads([lambda: [net.predict(X) for _ in range(50)]] * 4):
        for o in out:
            np.testing.assert_array_equal(o, expected)


# --- memory --------------------------------------------------------------------------------------


def _predict_peak_bytes(net, x):
    """The most memory ``net.predict(x)`` holds at once beyond what it started with (warm)."""
    net.predict(x)
    tracemalloc.start()
    try:
        for _ in range(3):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            out = net.predict(x)
            peak = tracemalloc.get_traced_memory()[1] - before
            del out
        return peak
    finally:
        tracemalloc.stop()


def test_predict_fast_path_allocates_only_its_output(compiled_backend):
    net = classifier(compiled_backend, sizes=[256, 128, 64, 10])
    x = np.random.default_rng(0).normal(size=(64, 256)).astype(np.float32)
    # 64 rows against 2: the growth is the (64, 10) float32 result's 2.5 KB; a copy of x would add
    # 64 KB, a hidden layer's activations 32 KB — the kernel keeps those in its own fixed workspace.
    # (Not against 1 row: numba's narrow output layer then needs no padded edge copy, a scratch of
    # fixed size, ~10 KB here, that every larger batch makes once.)
    growth = _predict_peak_bytes(net, x) - _predict_peak_bytes(net, x[:2])
    assert growth <= 62 * 10 * 4 + 1024, f"predict at 64 rows allocated {growth} bytes more than at 2"
    # the per-call constant: cython none; numba's dispatcher types the layer record in Python (~17 KB)
    assert _predict_peak_bytes(net, x[:1]) <= {"cython": 2048, "numba": 24 * 1024}[compiled_backend]


def test_repeated_predict_and_train_steps_leak_nothing(backend):
    net = classifier(backend, sizes=[64, 256, 10])
    x = np.random.default_rng(0).normal(size=(128, 64)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 10, 128)

    def rounds(n):
        for i in range(n):
            net.predict(x)
            if i % 8 == 0:
                net.train_step(x, labels, LOSS)
    rounds(20)  # warm up
    tracemalloc.start()  # NumPy arrays and Python objects: any leaked array (>= 5 KB) shows
    try:
        before = tracemalloc.get_traced_memory()[0]
        rounds(60)
        gc.collect()
        leaked = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert leaked < 64 * 1024, f"{leaked} bytes still allocated after 60 rounds"
    before = rss()  # and what tracemalloc cannot see: malloc in compiled kernels (workspaces)
    rounds(200)  # a leaked row-block workspace (>= 128 KB) would add >= 25 MB
    grown = rss() - before
    assert grown < 12 * MB, f"RSS grew by {grown / MB:.1f} MB"


# --- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trips_exactly(backend, dtype, tmp_path):
    net = fd.MLP([5, 7, 4, 3], ["leaky_relu", "elu", "softmax"], alphas=[0.2, 1.7, None], dtype=dtype,
                 random_state=1, backend=backend)
    x, labels = data(2, 10, dtype)
    net.train_step(x[:, :5], labels, LOSS)  # weights no initializer would produce
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = fd.load_model(path, backend=backend)
    assert loaded.architecture() == net.architecture()
    assert loaded.params.dtype == dtype
    np.testing.assert_array_equal(loaded.params, net.params)
    np.testing.assert_array_equal(loaded.predict(x[:, :5]), net.predict(x[:, :5]))


def test_sequential_save_load_round_trips_exactly(backend, tmp_path):
    model = fd.Sequential([fd.Dense(8, activation="gelu", input_shape=(4,)), fd.Dense(2, activation="softmax")],
                          seed=3, backend=backend)
    model.compile(optimizer="adam", loss=LOSS)
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    model.fit(x, np.arange(16) % 2, epochs=1, verbose=0)
    model.save(tmp_path / "seq.npz")
    loaded = fd.load_model(tmp_path / "seq.npz", backend=backend)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small saved model (a few KB, so every byte of it can be corrupted in turn)."""
    net = fd.MLP([3, 4, 2], ["tanh", "softmax"], random_state=0, backend="numpy")
    path = tmp_path_factory.mktemp("saved") / "model.npz"
    net.save(path)
    return net, path.read_bytes()


def load_bytes(tmp_path, content, name="bad.npz"):
    path = tmp_path / name
    path.write_bytes(content)
    return fd.load_model(path, backend="numpy")


def test_truncated_files_give_a_clear_error(saved, tmp_path):
    _, content = saved
    for size in sorted({0, 1, 10, 30, len(content) // 2, len(content) - 100, len(content) - 1}):
        with pytest.raises(ValueError, match=r"path: .* (not a readable fusedense model file|not a fusedense model)"):
            load_bytes(tmp_path, content[:size])


def test_a_bit_flip_anywhere_gives_an_error_or_the_same_model(saved, tmp_path):
    """A flip in zip metadata nothing reads (a timestamp) is harmless; any other must be caught
    (zip CRC, the record's SHA-256 of the parameters, the JSON checks) — never a different model
    or another kind of exception."""
    net, content = saved
    caught = 0
    for i in range(len(content)):
        flipped = bytearray(content)
        flipped[i] ^= 1 << (i % 8)
        try:
            loaded = load_bytes(tmp_path, bytes(flipped))
        except ValueError:
            caught += 1
            continue
        assert loaded.architecture() == net.architecture(), f"byte {i}"
        np.testing.assert_array_equal(loaded.params, net.params, err_msg=f"byte {i}")
    assert caught > len(content) // 2


class _Exploit:
    """Unpickling this would call os.system; loading must never get that far."""
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_FUSEDENSE_TEST",))


def foreign_files(content):
    """(id, bytes) of files that are not fusedense models, or are malicious."""
    import io as _io

    def npz(**arrays):
        buf = _io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    with zipfile.ZipFile(_io.BytesIO(content)) as z:
        params = np.load(_io.BytesIO(z.read("params.npy")))
    return [
        ("text", b"hello, I am not a model\n"),
        ("npy", (lambda b: (np.save(b, np.ones(3)), b.getvalue())[1])(_io.BytesIO())),
        ("other_npz", npz(weights=np.ones(3))),
        ("object_record", npz(record=np.array([_Exploit()], dtype=object), params=params)),
        ("object_params", npz(record=np.frombuffer(b'{"format": "fusedense-model"}', np.uint8),
                              params=np.array([_Exploit()], dtype=object))),
        ("pickle", pickle.dumps(_Exploit())),
        ("record_not_json", npz(record=np.frombuffer(b"\xff\xfe{", np.uint8), params=params)),
        ("record_huge_sizes", npz(record=np.frombuffer(
            b'{"format": "fusedense-model", "version": 1, "kind": "MLP", "n_params": 10, "sha256": "",'
            b' "architecture": {"sizes": [1099511627776, 2], "activations": ["relu"], "alphas": [null],'
            b' "dtype": "float32"}}', np.uint8), params=params)),
    ]


@pytest.mark.parametrize("case", range(8), ids=["text", "npy", "other_npz", "object_record", "object_params",
                                                "pickle", "record_not_json", "record_huge_sizes"])
def test_foreign_and_malicious_files_are_rejected_without_unpickling(saved, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    name, content = foreign_files(saved[1])[case]
    with pytest.raises(ValueError, match=r"path: "):
        load_bytes(tmp_path, content)
    assert not (tmp_path / "PWNED_BY_FUSEDENSE_TEST").exists()


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fd.load_model(tmp_path / "nope.npz")


def test_saving_is_atomic(saved, tmp_path, monkeypatch):
    """A save that fails half-way leaves the previous file intact and no temporary file behind."""
    net, content = saved
    path = tmp_path / "model.npz"
    path.write_bytes(content)

    def fail_half_way(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        classifier("numpy").save(path)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    gc.collect()


def test_save_from_many_threads_leaves_one_complete_file(tmp_path):
    path = tmp_path / "model.npz"
    nets = [classifier("numpy", seed=seed) for seed in range(4)]
    run_in_threads([lambda net=net: [net.save(path) for _ in range(10)] for net in nets])
    loaded = fd.load_model(path, backend="numpy")
    assert any(np.array_equal(loaded.params, net.params) for net in nets)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_concurrent_loads_and_saves_never_see_a_partial_file(saved, tmp_path):
    net, content = saved
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    stop = threading.Event()

    def keep_saving():
        while not stop.is_set():
            net.save(path)

    def keep_loading():
        try:
            for _ in range(100):
                np.testing.assert_array_equal(fd.load_model(path, backend="numpy").params, net.params)
        finally:
            stop.set()
    run_in_threads([keep_saving, keep_loading])
