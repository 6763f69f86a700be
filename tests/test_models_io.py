"""save / load_model: exact round trips; truncated, tampered and foreign files are rejected."""
import json
import os
import zipfile

import numpy as np
import pytest

import fusedense as fd


def _trained_sequential():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40)
    model = fd.Sequential([fd.Dense(8, activation="leaky_relu", alpha=0.2, input_shape=(5,)),
                           fd.Dense(3, activation="softmax")], seed=0)
    model.compile(optimizer=fd.optimizers.SGD(0.1, momentum=0.5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    return model, x, y


def test_sequential_round_trip_is_exact_and_stays_compiled(tmp_path):
    model, x, y = _trained_sequential()
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fd.load_model(path)
    assert isinstance(loaded, fd.Sequential)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert [layer.activation for layer in loaded.layers] == ["leaky_relu", "softmax"]
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    loaded.fit(x, y, epochs=1, verbose=0)  # trainable again


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mlp_round_trip_keeps_dtype_and_exact_parameters(tmp_path, dtype):
    net = fd.MLP([4, 6, 2], ["gelu", "sigmoid"], dtype=dtype, random_state=3)
    net.save(tmp_path / "net.npz")
    loaded = fd.load_model(tmp_path / "net.npz")
    assert isinstance(loaded, fd.MLP) and loaded.dtype == dtype
    np.testing.assert_array_equal(loaded.params, net.params)
    assert loaded.architecture() == net.architecture()


def test_kernel_penalties_survive_save_and_load(tmp_path):
    """The (l1, l2) kernel penalties are part of how a model trains: a saved and reloaded model
    trains exactly like the original (MLP, EmbeddingMLP and a Sequential with regularizers)."""
    rng = np.random.default_rng(0)
    net = fd.MLP([4, 6, 2], ["relu", "identity"], random_state=3, penalties=[(0.01, 0.0), (0.0, 0.05)])
    lm = fd.EmbeddingMLP(5, 3, 2, [4, 5], random_state=0, penalties=[(0.0, 0.1), (0.02, 0.0)])
    for model in (net, lm):
        model.save(tmp_path / "m.npz")
        loaded = fd.load_model(tmp_path / "m.npz")
        np.testing.assert_array_equal(loaded.penalties, model.penalties)
        assert loaded.architecture() == model.architecture()
    seq = fd.Sequential([fd.Dense(6, activation="relu", input_shape=(4,), kernel_regularizer=fd.regularizers.l2(0.05)),
                         fd.Dense(2)], seed=0)
    seq.compile(optimizer="sgd", loss="mse")
    x, y = rng.normal(size=(16, 4)).astype(np.float32), rng.normal(size=(16, 2)).astype(np.float32)
    seq.fit(x, y, epochs=1, verbose=0)
    seq.save(tmp_path / "s.npz")
    loaded = fd.load_model(tmp_path / "s.npz")
    np.testing.assert_array_equal(loaded.network.penalties, seq.network.penalties)
    seq.fit(x, y, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_array_equal(loaded.network.params, seq.network.params)


def test_a_negative_penalty_in_a_file_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    fd.MLP([3, 4, 2], random_state=0, penalties=[(0.0, 0.1), (0.0, 0.0)]).save(path)
    record = _record(path)
    record["architecture"]["penalties"][0][1] = -1.0
    _rewrite(path, record=record)
    with pytest.raises(ValueError, match="not a fusedense model file: architecture: .*penalties"):
        fd.load_model(path)


def test_save_writes_the_exact_path_and_leaves_no_temporary_files(tmp_path):
    net = fd.MLP([3, 2], random_state=0)
    net.save(tmp_path / "weights.bin")
    assert sorted(os.listdir(tmp_path)) == ["weights.bin"]


def test_truncated_file_is_rejected(tmp_path):
    path = tmp_path / "m.npz"
    fd.MLP([30, 20, 2], random_state=0).save(path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a fusedense model file"):
            fd.load_model(path)


def _rewrite(path, record=None, params=None):
    with np.load(path) as data:
        arrays = {"record": data["record"], "params": data["params"]}
    if record is not None:
        arrays["record"] = np.frombuffer(json.dumps(record).encode(), np.uint8)
    if params is not None:
        arrays["params"] = params
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _record(path):
    with np.load(path) as data:
        return json.loads(data["record"].tobytes())


def test_tampered_parameters_fail_the_checksum(tmp_path):
    path = tmp_path / "m.npz"
    net = fd.MLP([3, 4, 2], random_state=0)
    net.save(path)
    params = net.params.copy()
    params[0] += 1
    _rewrite(path, params=params)
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        fd.load_model(path)


def test_parameters_that_do_not_fit_the_architecture_are_rejected(tmp_path):
    path = tmp_path / "m.npz"
    net = fd.MLP([3, 4, 2], random_state=0)
    net.save(path)
    record = _record(path)
    record["architecture"]["sizes"] = [3, 5, 2]
    _rewrite(path, record=record)
    with pytest.raises(ValueError, match="the architecture needs"):
        fd.load_model(path)


def test_foreign_files_are_rejected(tmp_path):
    npz = tmp_path / "other.npz"
    np.savez(npz, a=np.arange(3))
    with pytest.raises(ValueError, match="not a fusedense model file"):
        fd.load_model(npz)
    npy = tmp_path / "other.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(ValueError, match="not a fusedense model file"):
        fd.load_model(npy)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a fusedense model file"):
        fd.load_model(text)
    path = tmp_path / "m.npz"
    fd.MLP([3, 2], random_state=0).save(path)
    record = _record(path)
    record["format"] = "something-else"
    _rewrite(path, record=record)
    with pytest.raises(ValueError, match="not a fusedense model file"):
        fd.load_model(path)


def test_pickled_object_arrays_are_never_loaded(tmp_path):
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("record.npy", "w") as f:
            np.save(f, np.array([{"format": "fusedense-model"}], dtype=object), allow_pickle=True)
        with zf.open("params.npy", "w") as f:
            np.save(f, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not a fusedense model file"):
        fd.load_model(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fd.load_model(tmp_path / "absent.npz")
