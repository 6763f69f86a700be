"""fd.utils (keras.utils's to_categorical and set_random_seed) and fd.datasets.fashion_mnist.load_data."""
import os

import numpy as np
import pytest

import fusedense as fd


def test_to_categorical_follows_keras():
    np.testing.assert_array_equal(fd.utils.to_categorical([0, 2, 1]), np.eye(3)[[0, 2, 1]])
    column = fd.utils.to_categorical(np.array([[1], [0]]), num_classes=4)  # a trailing axis of 1 goes
    assert column.shape == (2, 4) and column.dtype == np.float64 and column[0, 1] == 1
    assert fd.utils.to_categorical(np.zeros((2, 3), int), 2).shape == (2, 3, 2)
    with pytest.raises(ValueError, match=r"x: expected class labels in \[0, 2\), got values in \[0, 2\]"):
        fd.utils.to_categorical([0, 2], num_classes=2)


def test_to_categorical_matches_real_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")  # (as tests/test_keras_io.py)
    keras = pytest.importorskip("keras")
    labels = np.random.default_rng(0).integers(0, 5, (7, 1))
    ours, theirs = fd.utils.to_categorical(labels), keras.utils.to_categorical(labels)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def _dropout_model_weights(seed):
    fd.utils.set_random_seed(seed)
    model = fd.Sequential([fd.Input(shape=(4,)), fd.layers.Dense(8, activation="relu"), fd.layers.Dropout(0.5),
                           fd.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(1).random((64, 4), dtype=np.float32)
    model.fit(x, (x[:, 0] > 0.5).astype(int), epochs=2, batch_size=8, verbose=0)  # shuffled, dropout masks
    return model.get_weights()


def test_set_random_seed_repeats_unseeded_models_and_estimators():
    same = _dropout_model_weights(3), _dropout_model_weights(3)
    for a, b in zip(*same):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_dropout_model_weights(4)[0], same[0][0])

    def estimator(seed):
        fd.utils.set_random_seed(seed)
        X = np.random.default_rng(0).random((30, 3))
        return fd.MLPClassifier(hidden_layer_sizes=(4,), max_iter=3).fit(X, np.arange(30) % 2).coefs_[0]
    with pytest.warns(Warning):  # ConvergenceWarning at 3 iterations
        first, again, other = estimator(1), estimator(1), estimator(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    with pytest.raises(ValueError, match="Expected `seed` argument to be an integer"):
        fd.utils.set_random_seed(1.5)


def test_fashion_mnist_load_data_is_keras_shaped():
    try:
        (x_train, y_train), (x_test, y_test) = fd.datasets.fashion_mnist.load_data()
    except fd.datasets.DatasetNotFoundError:
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28) and x_train.dtype == np.uint8
    assert set(np.unique(y_train)) == set(range(10)) and y_test.shape == (10000,)
