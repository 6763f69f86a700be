"""fd.layers.EmbeddingBag: bags of token ids or hashed n-grams as the first layer of a Sequential
(the sparse first layer with identity activation and no bias)."""
import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

import fusedense as fd

VOCAB, DIM, CLASSES = 50, 6, 3


def bag_model(backend, mode="mean", seed=0, learning_rate=0.001):
    model = fd.Sequential([fd.layers.EmbeddingBag(VOCAB, DIM, mode=mode),
                           fd.layers.Dense(CLASSES, activation="softmax")], seed=seed, backend=backend)
    model.compile(optimizer=fd.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.build()
    return model


def counts(rng, n=20, density=0.1):
    X = sp.random(n, VOCAB, density=density, format="csr", random_state=rng, dtype=np.float64)
    X.data = np.ceil(X.data * 3)  # counts 1..3
    return X


def expected_outputs(model, X, mode):
    """The oracle: each bag's (mean or sum of) table rows, then the dense softmax layer, in float64."""
    table, (W, b) = model.layers[0].embeddings.astype(np.float64), (a.astype(np.float64) for a in model.layers[1].weights)
    dense = X.toarray()
    if mode == "mean":
        dense /= np.maximum(dense.sum(axis=1, keepdims=True), 1e-12)
    z = dense @ table @ W + b
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_predict_is_the_mean_or_sum_of_the_rows_on_every_engine(backend, mode):
    X = counts(np.random.default_rng(0))
    model = bag_model(backend, mode)
    np.testing.assert_allclose(model.predict(X), expected_outputs(model, X, mode), rtol=1e-5, atol=1e-6)


def test_token_id_sequences_are_the_same_bags_as_counts(backend):
    model = bag_model(backend)
    ids = [[3, 7, 7, 12], [0], [49, 1, 2]]
    X = sp.csr_matrix((np.ones(8), np.concatenate(ids), [0, 4, 5, 8]), shape=(3, VOCAB))
    np.testing.assert_array_equal(model.predict(ids), model.predict(X))
    fixed = np.array([[1, 2, 3], [4, 4, 5]])
    np.testing.assert_array_equal(model.predict(fixed), model.predict([[1, 2, 3], [4, 4, 5]]))


def test_training_moves_only_the_rows_the_bags_use(backend):
    rng = np.random.default_rng(1)
    ids = [rng.integers(0, 25, size=4) for _ in range(64)]  # rows 25.. never appear
    y = np.array([seq[0] % CLASSES for seq in ids])
    model = bag_model(backend, learning_rate=0.05)
    table_before = model.layers[0].embeddings.copy()
    history = model.fit(ids, y, epochs=30, batch_size=16, verbose=0)
    table = model.layers[0].embeddings
    np.testing.assert_array_equal(table[25:], table_before[25:])
    assert not np.array_equal(table[:25], table_before[:25])
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert model.evaluate(ids, y, verbose=0)[1] > 0.9


def test_every_engine_trains_the_same_as_the_oracle():
    rng = np.random.default_rng(2)
    ids = [rng.integers(0, VOCAB, size=rng.integers(1, 6)) for _ in range(48)]
    y = rng.integers(0, CLASSES, size=48)
    results = {}
    for backend in fd.backends():
        model = bag_model(backend, seed=3)
        model.fit(ids, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
        results[backend] = model.get_weights()
    for backend, weights in results.items():
        for got, want in zip(weights, results["numpy"]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=backend)


def test_bad_bags_get_clear_errors():
    model = bag_model("numpy")
    with pytest.raises(ValueError, match=r"x: token ids must lie in \[0, 50\).*\[0, 50\]"):
        model.predict([[0, 50]])
    with pytest.raises(ValueError, match="x: expected integer token ids, got dtype float64"):
        model.predict([np.array([0.5, 1.0])])
    with pytest.raises(ValueError, match=r"x: expected 50 columns.*shape \(2, 49\)"):
        model.predict(sp.csr_matrix((2, 49)))
    with pytest.raises(TypeError, match="x: expected a SciPy sparse matrix of bag counts"):
        model.predict("some text")
    with pytest.raises(ValueError, match="x: expected at least one bag"):
        model.predict([])
    with pytest.raises(ValueError, match="mode: expected one of"):
        fd.layers.EmbeddingBag(10, 2, mode="max")
    with pytest.raises(TypeError, match="activation: EmbeddingBag is linear"):
        fd.layers.EmbeddingBag(10, 2, activation="relu")
    with pytest.raises(TypeError, match="kernel_regularizer: EmbeddingBag .* no bias or penalty"):
        fd.layers.EmbeddingBag(10, 2, kernel_regularizer="l2")
    with pytest.raises(ValueError, match="EmbeddingBag must be the first layer"):
        fd.Sequential([fd.layers.Dense(4, input_shape=(3,)), fd.layers.EmbeddingBag(10, 2)])


def test_save_load_and_pickle_keep_the_bag_layer(tmp_path):
    ids = [[1, 2], [3], [4, 5, 6]]
    model = bag_model(None, mode="sum")  # the default engine, which the loaded copies use too
    model.fit(ids, [0, 1, 2], epochs=2, verbose=0)
    path = os.path.join(tmp_path, "bag.npz")
    model.save(path)
    for copy in (fd.load_model(path), pickle.loads(pickle.dumps(model))):
        assert isinstance(copy.layers[0], fd.layers.EmbeddingBag) and copy.layers[0].mode == "sum"
        np.testing.assert_array_equal(copy.predict(ids), model.predict(ids))


def test_keras_save_refuses_the_bag_layer(tmp_path):
    pytest.importorskip("h5py")
    model = bag_model("numpy")
    with pytest.raises(ValueError, match="Keras has no EmbeddingBag layer"):
        model.save(os.path.join(tmp_path, "bag.keras"))


def test_quantizing_a_bag_model_keeps_its_table_form_and_predictions():
    rng = np.random.default_rng(4)
    ids = [rng.integers(0, VOCAB, size=5) for _ in range(40)]
    model = bag_model(None, learning_rate=0.05)
    model.fit(ids, [seq[0] % CLASSES for seq in ids], epochs=5, verbose=0)
    quantized = fd.quantize(model, "int8")
    assert quantized.network.table is not None  # the first layer stored as a gathered table
    np.testing.assert_allclose(quantized.predict(ids), model.predict(ids), atol=0.02)
