"""Models to and from real Keras 3 (.keras files, .weights.h5, live Keras models). Tests that need
Keras or h5py skip only when they are not installed (the `keras` extra installs both)."""
import os
import zipfile

import numpy as np
import pytest

import fusedense as fd

os.environ.setdefault("KERAS_BACKEND", "jax")


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


@pytest.fixture(scope="module")
def h5py():
    return pytest.importorskip("h5py")


def _data(n=200, n_in=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)).astype(np.float32), rng.integers(0, 3, n)


@pytest.fixture(scope="module")
def keras_trained(keras, tmp_path_factory):
    """A Keras model trained by Keras (every supported layer kind) and its .keras file."""
    x, y = _data()
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="gelu"), keras.layers.Dropout(0.3),
                              keras.layers.Dense(5, activation="leaky_relu", use_bias=False),
                              keras.layers.Dense(3), keras.layers.Activation("softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=3, verbose=0)
    path = tmp_path_factory.mktemp("keras") / "trained.keras"
    model.save(path)
    return model, path


def test_a_keras_trained_model_loads_with_its_predictions_and_evaluation(keras_trained, h5py, backend):
    keras_model, path = keras_trained
    x, y = _data()
    expected = keras_model.predict(x, verbose=0)
    for model in (fd.load_keras(path, backend=backend), fd.Sequential.from_keras(keras_model, backend=backend)):
        assert model.network.backend == backend and model.network.activations == ("gelu_erf", "leaky_relu", "softmax")
        np.testing.assert_allclose(model.predict(x), expected, atol=1e-5, rtol=0)
        assert model.evaluate(x, y, verbose=0) == pytest.approx(keras_model.evaluate(x, y, verbose=0), rel=1e-6)
        assert [layer.name for layer in model.layers] == [layer.name for layer in keras_model.layers]


def test_a_fusedense_model_saved_as_keras_loads_in_keras(keras, h5py, tmp_path):
    x, y = _data()
    model = fd.Sequential([fd.Input(shape=(6,)), fd.layers.Dense(8, activation="tanh",
                                                                 kernel_regularizer=fd.regularizers.l2(1e-3)),
                           fd.layers.Dropout(0.0), fd.layers.Dense(3, activation="softmax", use_bias=False)], seed=0)
    model.compile(loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x), atol=1e-6)
    assert [type(layer).__name__ for layer in loaded.layers] == ["Dense", "Dropout", "Dense"]
    model.save_weights(tmp_path / "m.weights.h5")
    loaded.set_weights([np.zeros_like(w) for w in loaded.get_weights()])
    loaded.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x), atol=1e-6)


def test_embedding_models_go_both_ways(keras, h5py, tmp_path):
    keras_model = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(10, 4),
                                    keras.layers.Flatten(), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(10)])
    tokens = np.random.default_rng(1).integers(0, 10, (40, 3))
    model = fd.Sequential.from_keras(keras_model)
    np.testing.assert_allclose(model.predict(tokens), keras_model.predict(tokens, verbose=0), atol=1e-6)
    model.save(tmp_path / "e.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "e.keras").predict(tokens, verbose=0),
                               model.predict(tokens), atol=1e-6)


def test_the_keras_file_round_trips_without_keras(h5py, tmp_path):
    import fusedense as keras_like
    model = keras_like.Sequential([keras_like.Input(shape=(4,)), keras_like.layers.Dense(3, activation="relu"),
                                   keras_like.layers.Dense(2)], seed=0)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        assert sorted(archive.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
    for loaded in (keras_like.load_keras(tmp_path / "m.keras"), keras_like.models.load_model(tmp_path / "m.keras"),
                   keras_like.load_model(tmp_path / "m.keras")):
        for a, b in zip(loaded.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_what_keras_cannot_express_is_refused_never_mislabelled(h5py, tmp_path):
    net = fd.MLP([3, 2], ["relu"])
    with pytest.raises(ValueError, match="an MLP is not a Keras model"):
        net.save(tmp_path / "net.keras")
    tanh_gelu = fd.Sequential([fd.Input(shape=(3,)), fd.layers.Dense(2, activation="gelu")])
    with pytest.raises(ValueError, match="Keras has no activation named for 'gelu'"):
        tanh_gelu.save(tmp_path / "g.keras")
    leaky = fd.Sequential([fd.Input(shape=(3,)), fd.layers.Dense(2, activation="leaky_relu")])
    with pytest.raises(ValueError, match="give alpha=0.2"):
        leaky.save(tmp_path / "l.keras")
    assert not list(tmp_path.iterdir())
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a .keras file"):
        fd.load_keras(tmp_path / "bad.keras")


def test_unsupported_keras_layers_are_refused_by_name(keras):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.BatchNormalization(name="bn")])
    with pytest.raises(ValueError, match=r"layer 'bn' \(BatchNormalization\): fusedense cannot run this layer"):
        fd.Sequential.from_keras(model)
    selu = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="selu", name="d")])
    with pytest.raises(ValueError, match=r"layer 'd' \(Dense\): activation 'selu' has no fusedense kernel"):
        fd.Sequential.from_keras(selu)


def test_model_checkpoint_writes_keras_files_and_weights(h5py, tmp_path):
    x, y = _data(60)
    model = fd.Sequential([fd.Input(shape=(6,)), fd.layers.Dense(3, activation="softmax")], seed=0)
    model.compile(loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        fd.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch}.keras")),
        fd.callbacks.ModelCheckpoint(str(tmp_path / "w.weights.h5"), save_weights_only=True)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-1.keras", "m-2.keras", "w.weights.h5"]
    last = fd.load_keras(tmp_path / "m-2.keras")
    np.testing.assert_array_equal(last.predict(x), model.predict(x))
    fresh = fd.Sequential([fd.Input(shape=(6,)), fd.layers.Dense(3, activation="softmax")], seed=1)
    fresh.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))
