"""Every model pickles, deep-copies and joblib-dumps on every engine: the copy predicts the same
bits and trains on exactly as the original does (weights, optimizer state and step count travel)."""
import copy
import pickle

import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends
from fusedense.sklearn import MLPClassifier, MLPRegressor

ENGINES = _backends.backends()
RNG = np.random.default_rng(0)
X, LABELS = RNG.normal(size=(40, 6)).astype(np.float32), RNG.integers(0, 3, 40)


def _mlp(backend):
    net = fd.MLP([6, 16, 3], ["relu", "softmax"], random_state=0, backend=backend)
    net.train_step(X, LABELS, loss="sparse_categorical_crossentropy")
    return net, lambda m: m.predict(X), lambda m: m.train_step(X, LABELS, loss="sparse_categorical_crossentropy")


def _embedding(backend):
    tokens, labels = RNG.integers(0, 10, (30, 3)), RNG.integers(0, 10, 30)
    net = fd.EmbeddingMLP(10, 4, 3, [16, 10], random_state=0, backend=backend)
    net.train_step(tokens, labels, loss="sparse_categorical_crossentropy")
    return net, lambda m: m.predict(tokens), lambda m: m.train_step(tokens, labels, loss="sparse_categorical_crossentropy")


def _sequential(backend):
    model = fd.Sequential([fd.Dense(16, activation="relu", input_shape=(6,)), fd.Dense(3, activation="softmax")],
                          backend=backend, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X, LABELS, epochs=1, verbose=0)
    return model, lambda m: m.predict(X), lambda m: m.fit(X, LABELS, epochs=1, shuffle=False, verbose=0)


def _classifier(backend):
    model = MLPClassifier((16,), max_iter=3, random_state=0, backend=backend).fit(X, LABELS)
    return model, lambda m: m.predict_proba(X), lambda m: m.partial_fit(X, LABELS)


def _regressor(backend):
    model = MLPRegressor(hidden_layer_sizes=(16,), max_iter=3, random_state=0, backend=backend).fit(X, X[:, :2])
    return model, lambda m: m.predict(X), lambda m: m.partial_fit(X, X[:, :2])


def _network(model):
    return getattr(model, "network", None) or getattr(model, "_net", None) or model


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("make", [_mlp, _embedding, _sequential, _classifier, _regressor])
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("backend", ENGINES)
def test_a_copy_predicts_and_trains_on_like_the_original(backend, how, make):
    model, predict, train = make(backend)
    clone = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    np.testing.assert_array_equal(predict(clone), predict(model))
    train(model)
    train(clone)
    np.testing.assert_array_equal(predict(clone), predict(model))


def test_joblib_dump_and_load_round_trip(tmp_path):
    joblib = pytest.importorskip("joblib")
    model, predict, _ = _classifier(None)
    joblib.dump(model, tmp_path / "m.joblib")
    np.testing.assert_array_equal(predict(joblib.load(tmp_path / "m.joblib")), predict(model))


def _misaligned_loads(model):
    """``model`` through pickle 5 with its out-of-band buffers moved to an odd address, as a
    frame received by Dask may place them."""
    buffers = []
    data = pickle.dumps(model, protocol=5, buffer_callback=buffers.append)
    moved = []
    for buffer in buffers:
        raw = buffer.raw()
        frame = bytearray(raw.nbytes + 1)
        frame[1:] = raw
        moved.append(memoryview(frame)[1:])
    return pickle.loads(data, buffers=moved)


@pytest.mark.parametrize("make", [lambda: fd.MLP([6, 16, 3], ["relu", "softmax"], random_state=0),
                                  lambda: fd.quantize(fd.MLP([6, 16, 3], ["relu", "softmax"], random_state=0), "int8")],
                         ids=["MLP", "QuantizedMLP"])
def test_a_buffer_unpickled_at_an_odd_address_is_realigned(make):
    """The kernels' vector loads of a weight row stay within cache lines only when the buffer
    starts on one: an unpickled model copies a misaligned buffer to an aligned one."""
    model = make()
    copy_ = _misaligned_loads(model)
    buffer = copy_.qbuffer if hasattr(copy_, "qbuffer") else copy_.params
    assert buffer.ctypes.data % fd.layout.REGION_ALIGN == 0 and buffer.flags.writeable
    np.testing.assert_array_equal(copy_.predict(X), model.predict(X))
