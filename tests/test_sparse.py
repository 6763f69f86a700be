"""Sparse (CSR) input: the fused sparse first layer and the sparse training step on every
engine against the NumPy oracle, the oracle against the densified computation, hostile CSR,
and the lazy optimizers touching only the rows a batch uses."""
import numpy as np
import pytest
import scipy.sparse as sp

import fusedense as fd
from fusedense import _backends, abi, reference
from fusedense import functional as F
from fusedense.gate import checked_record
from fusedense.layout import make_layout
from fusedense.sparse import as_csr

ENGINES = _backends.backends()
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _hostile_csr(dtype, n_features=40, seed=0):
    """Unsorted and repeated indices, an empty row (the first and one inside), int32 indptr."""
    rng = np.random.default_rng(seed)
    rows = [[], [3, 3, 1], [], [39, 0, 7, 7, 7, 20], [5]]
    indices = np.array([i for r in rows for i in r])
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
    data = rng.normal(size=indices.size).astype(dtype)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), n_features))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "identity"])
def test_sparse_dense_matches_the_densified_computation(engine, dtype, activation):
    X = _hostile_csr(dtype)
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(40, 6)).astype(dtype), rng.normal(size=6).astype(dtype)
    y, z = F.sparse_dense(X, W, b, activation, backend=engine, return_preactivation=True)
    y_dense, z_dense = reference.dense_forward(X.toarray(), W, b, fd.activations.get_activation(activation), 0.0)
    np.testing.assert_allclose(z, z_dense, **TOL[dtype])
    np.testing.assert_allclose(y, y_dense, **TOL[dtype])
    dy = rng.normal(size=y.shape).astype(dtype)
    rows, dW_rows, db = F.sparse_dense_grad(dy, X, z=z, y=y, activation=activation, backend=engine)
    _, dW, db_dense = reference.dense_backward(dy, X.toarray(), W, z_dense, y_dense,
                                               fd.activations.get_activation(activation), 0.0, need_dx=False)
    np.testing.assert_array_equal(rows, [0, 1, 3, 5, 7, 20, 39])
    np.testing.assert_allclose(dW_rows, dW[rows], **TOL[dtype])
    np.testing.assert_allclose(db, db_dense, **TOL[dtype])
    untouched = np.setdiff1d(np.arange(40), rows)
    assert not dW[untouched].any()  # the rows left out really have no gradient


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [[40, 6], [40, 6, 5, 3]], ids=["one-layer", "three-layers"])
def test_sparse_mlp_forward_is_the_densified_network(engine, dtype, sizes):
    X = _hostile_csr(dtype)  # empty rows, repeated and unsorted indices
    net = fd.MLP(sizes, ["tanh"] * (len(sizes) - 2) + ["softmax"], dtype=dtype, random_state=2, backend=engine)
    np.testing.assert_allclose(net.predict(X), reference.mlp_forward(X.toarray(), net.params, net.layers),
                               **TOL[dtype])


def test_the_oracle_matches_float64_dense_products_on_a_random_matrix():
    X = sp.random(30, 200, density=0.05, random_state=3, format="csr")
    rng = np.random.default_rng(3)
    W, b = rng.normal(size=(200, 5)), rng.normal(size=5)
    act = fd.activations.get_activation("sigmoid")
    y, z = reference.sparse_dense_forward(X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data, W, b, act, 0)
    np.testing.assert_allclose(z, X.toarray() @ W + b, rtol=1e-12)
    dy = rng.normal(size=y.shape)
    rows = np.unique(X.indices).astype(np.int64)
    dW_rows, db = reference.sparse_dense_backward(dy, X.indptr, X.indices, X.data, z, y, act, 0, rows)
    dz = dy * y * (1 - y)
    np.testing.assert_allclose(dW_rows, (X.toarray().T @ dz)[rows], rtol=1e-11, atol=1e-13)


def test_nan_values_propagate_like_the_dense_product():
    X = _hostile_csr(np.float64)
    X.data[0] = np.nan  # row 1
    W = np.ones((40, 3))
    for engine in ENGINES:
        y = F.sparse_dense(X, W, None, "identity", backend=engine)
        assert np.isnan(y[1]).all() and np.isfinite(np.delete(y, 1, axis=0)).all(), engine


# --- hostile CSR arrays straight at the gate: the same ValueError from every engine ------------------

def _csr_arrays():
    X = _hostile_csr(np.float64).tocsr()
    return X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data.copy()


HOSTILE = {
    "index past the end": (lambda p, i, d: (p, np.where(i == 39, 40, i), d), "X.indices: column indices must lie"),
    "negative index": (lambda p, i, d: (p, np.where(i == 39, -1, i), d), "X.indices: column indices must lie"),
    "indptr too short": (lambda p, i, d: (p[:-1], i, d), "X.indptr: expected to run from 0 to nnz"),
    "indptr decreasing": (lambda p, i, d: (np.array([0, 3, 1, 4, 10, 10][:len(p)]), i, d), "non-decreasing"),
    "indptr not from 0": (lambda p, i, d: (p + 1, i, d), "X.indptr: expected to run from 0"),
    "int32 indices": (lambda p, i, d: (p, i.astype(np.int32), d), "X.indices: expected a C-contiguous int64"),
    "values too short": (lambda p, i, d: (p, i, d[:-1]), "X.data: expected a C-contiguous float64"),
    "float32 values": (lambda p, i, d: (p, i, d.astype(np.float32)), "X.data: expected a C-contiguous float64"),
    "no rows": (lambda p, i, d: (p[:1], i[:0], d[:0]), "X.indptr: expected B\\+1 >= 2"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("engine", ENGINES)
def test_hostile_csr_gets_a_clear_error_before_any_engine_runs(engine, case):
    make, message = HOSTILE[case]
    indptr, indices, data = make(*_csr_arrays())
    W, b = np.ones((40, 3)), np.zeros(3)
    y = np.empty((max(len(indptr) - 1, 1), 3))
    with pytest.raises(ValueError, match=message):
        _backends.load(engine).sparse_dense_forward(indptr, indices, data, W, b, 1, 0.0, y)
    layout, alphas, n_params = make_layout([40, 3, 2], ["relu", "softmax"])
    with pytest.raises(ValueError, match=message):  # the whole-network call checks the same
        _backends.load(engine).sparse_mlp_forward(indptr, indices, data, np.zeros(n_params),
                                                  checked_record(layout, alphas, n_params), y[:, :2].copy())


def test_the_front_converts_int64_int32_csc_coo_and_sparse_arrays_alike():
    X = _hostile_csr(np.float64)
    W = np.random.default_rng(0).normal(size=(40, 4))
    expected = F.sparse_dense(X, W, None, "relu")
    big = sp.csr_matrix((X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)), shape=X.shape)
    for variant in (big, X.tocsc(), X.tocoo(), sp.csr_array(X), sp.csc_array(X)):
        np.testing.assert_allclose(F.sparse_dense(variant, W, None, "relu"), expected, rtol=1e-13)
    with pytest.raises(ValueError, match="X: expected 40 columns"):
        F.sparse_dense(X[:, :39], W)
    with pytest.raises(TypeError, match="X: expected a SciPy sparse"):
        F.sparse_dense(X.toarray(), W)


def test_backward_rejects_rows_that_are_not_the_distinct_indices():
    indptr, indices, data = _csr_arrays()
    dy = np.ones((5, 3))
    rows = np.unique(indices)[:-1]  # one column missing: the kernel's lookup would miss it
    with pytest.raises(ValueError, match="rows: expected the sorted distinct column indices"):
        _backends.load("numpy").sparse_dense_backward(dy, indptr, indices, data, dy, None, 0, 0.0, rows,
                                                      np.empty((rows.size, 3)), np.empty(3))


# --- the training step ---------------------------------------------------------------------------

def _problem(dtype, kind, n_features=60, seed=0):
    layout, alphas, P = make_layout([n_features, 8, 3], ["relu", "softmax"])
    params = (np.random.default_rng(seed).normal(size=P) * 0.3).astype(dtype)
    rows = 2 if kind == abi.OPT_ADAM else 1
    hyper = np.zeros(abi.N_HYPER)
    hyper[[abi.H_OPTIMIZER, abi.H_LR, abi.H_BETA2, abi.H_EPS]] = kind, 0.05, 0.999, 1e-7
    hyper[abi.H_BETA1] = 0.9 if kind == abi.OPT_ADAM else 0.0
    return layout, alphas, P, params, np.zeros((rows, P), dtype), hyper


def _batch(dtype, n_features=60, seed=0):
    X = sp.random(9, n_features, density=0.08, random_state=seed, format="csr", dtype=np.float64)
    return as_csr(X, dtype), (np.arange(9) % 3).astype(np.int64)


def _run_steps(engine, dtype, kind, steps=3):
    layout, alphas, P, params, state, hyper = _problem(dtype, kind)
    record = checked_record(layout, alphas, P)
    grads = np.zeros(P, dtype)
    gate = _backends.load(engine)
    losses = []
    for step in range(1, steps + 1):
        X, labels = _batch(dtype, seed=step)
        hyper[abi.H_STEP] = step
        losses.append(gate.sparse_train_step(X.indptr, X.indices, X.data, labels, params, grads, state, record,
                                             abi.LOSS_SPARSE_XENT, hyper))
        assert hyper[abi.H_APPLIED] == step
    return np.array(losses), params, state


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", [abi.OPT_SGD, abi.OPT_ADAM, abi.OPT_ADAGRAD])
def test_sparse_train_step_matches_the_oracle(engine, dtype, kind):
    losses, params, state = _run_steps(engine, dtype, kind)
    ref_losses, ref_params, ref_state = _run_steps("numpy", dtype, kind)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(losses, ref_losses, **tol)
    np.testing.assert_allclose(params, ref_params, **tol)
    np.testing.assert_allclose(state, ref_state, **tol)


@pytest.mark.parametrize("engine", [e for e in ENGINES if e != "numpy"])
def test_concurrent_sparse_steps_equal_the_same_steps_one_at_a_time(engine):
    """The Cython step keeps its scratch and slot map between calls; a call running while
    another holds them allocates its own: threads get the bits of the serial runs."""
    import threading

    kinds = [abi.OPT_ADAGRAD, abi.OPT_ADAM, abi.OPT_ADAGRAD, abi.OPT_SGD]
    serial = [_run_steps(engine, np.float32, kind, steps=20) for kind in kinds]
    results = [None] * len(kinds)

    def run(i):
        results[i] = _run_steps(engine, np.float32, kinds[i], steps=20)
    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(kinds))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for got, want in zip(results, serial):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_the_sparse_sgd_oracle_equals_a_dense_step_on_the_densified_batch():
    """Plain SGD: untouched rows have a zero gradient, so the lazy step is the dense step."""
    layout, alphas, P, params, state, hyper = _problem(np.float64, abi.OPT_SGD)
    record = checked_record(layout, alphas, P)
    dense_params = params.copy()
    X, labels = _batch(np.float64)
    hyper[abi.H_STEP] = 1
    loss, *_ = reference.sparse_train_step(X.indptr, X.indices, X.data, labels, params, record, state,
                                           abi.LOSS_SPARSE_XENT, hyper)
    dense_loss, _ = reference.mlp_train_step(X.to_scipy().toarray(), labels, dense_params, record, np.zeros((1, P)),
                                             abi.LOSS_SPARSE_XENT, hyper)
    assert loss == pytest.approx(dense_loss, rel=1e-12)
    np.testing.assert_allclose(params, dense_params, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", [abi.OPT_SGD, abi.OPT_ADAM, abi.OPT_ADAGRAD])
def test_lazy_optimizers_touch_only_the_rows_the_batch_uses(engine, kind):
    layout, alphas, P, params, state, hyper = _problem(np.float64, kind)
    record = checked_record(layout, alphas, P)
    state += 0.5  # non-zero state: a dense Adam/Adagrad step would move untouched rows
    before, state_before = params.copy(), state.copy()
    X, labels = _batch(np.float64)
    grads = np.full(P, 7.0)
    hyper[abi.H_STEP] = 3
    _backends.load(engine).sparse_train_step(X.indptr, X.indices, X.data, labels, params, grads, state, record,
                                             abi.LOSS_SPARSE_XENT, hyper)
    W0 = slice(0, 60 * 8)
    table, table_before = params[W0].reshape(60, 8), before[W0].reshape(60, 8)
    used = np.unique(X.indices)
    unused = np.setdiff1d(np.arange(60), used)
    np.testing.assert_array_equal(table[unused], table_before[unused])
    for s, s0 in zip(state, state_before):
        np.testing.assert_array_equal(s[W0].reshape(60, 8)[unused], s0[W0].reshape(60, 8)[unused])
    assert (table[used] != table_before[used]).any(axis=1).all()
    assert (params[W0.stop:] != before[W0.stop:]).any()  # b0 and the dense layers moved
    assert (grads[W0] == 7.0).all()  # the W0 region of grads is never written (no dense dW)


@pytest.mark.parametrize("engine", ENGINES)
def test_sparse_train_step_is_transactional_on_nan(engine):
    layout, alphas, P, params, state, hyper = _problem(np.float64, abi.OPT_ADAM)
    record = checked_record(layout, alphas, P)
    X, labels = _batch(np.float64)
    X.data[0] = np.nan
    before = params.copy()
    hyper[abi.H_STEP] = 1
    loss = _backends.load(engine).sparse_train_step(X.indptr, X.indices, X.data, labels, params, np.zeros(P),
                                                    state, record, abi.LOSS_SPARSE_XENT, hyper)
    assert np.isnan(loss) and hyper[abi.H_APPLIED] == 0
    np.testing.assert_array_equal(params, before)


def test_adagrad_is_refused_by_the_dense_training_step():
    layout, alphas, P, params, state, hyper = _problem(np.float64, abi.OPT_ADAGRAD)
    record = checked_record(layout, alphas, P)
    hyper[abi.H_STEP] = 1
    with pytest.raises(ValueError, match="hyper: unknown optimizer code"):
        _backends.load("numpy").mlp_train_step(np.ones((2, 60)), np.zeros(2, np.int64), params, np.zeros(P), state,
                                               record, abi.LOSS_SPARSE_XENT, hyper)


@pytest.mark.parametrize("backend", fd.backends())
def test_rmsprop_on_sparse_input_is_refused_with_a_way_out(backend):
    """compile's default optimizer is Keras's RMSprop, which the lazy sparse step does not have."""
    X, y = _text_like(n=32)
    model = fd.Sequential([fd.Dense(4, activation="relu", input_shape=(X.shape[1],)), fd.Dense(2, activation="softmax")],
                          seed=0, backend=backend)
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="optimizer: training on sparse input .* not RMSprop .* optimizer='adam'"):
        model.fit(X, y, epochs=1, verbose=0)


# --- the vectorizer ---------------------------------------------------------------------------------

@pytest.mark.parametrize("analyzer", ["char", "word"])
@pytest.mark.parametrize("norm", ["l2", None])
def test_sparse_hashing_equals_the_dense_output(analyzer, norm):
    texts = ["Hello world, hello!", "", "žluťoučký kůň", "a b a b a"]
    dense = fd.HashingVectorizer(4096, analyzer=analyzer, norm=norm, sparse=False).transform(texts)
    X = fd.HashingVectorizer(4096, analyzer=analyzer, norm=norm, sparse=True).transform(texts)
    assert sp.issparse(X) and X.format == "csr" and X.has_sorted_indices and X.dtype == np.float32
    np.testing.assert_allclose(X.toarray(), dense, rtol=1e-6)
    assert sp.issparse(fd.HashingVectorizer(2**20).transform(texts))  # the default for wide outputs
    assert isinstance(fd.HashingVectorizer(1024).transform(texts), np.ndarray)


# --- the fronts: sparse in, never densified ----------------------------------------------------------

@pytest.fixture
def no_densify(monkeypatch):
    """Any densification of a SciPy sparse matrix fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a sparse input was densified")
    base = sp._base._spbase
    for name in ("toarray", "todense"):
        monkeypatch.setattr(base, name, refuse, raising=False)


def _text_like(n=240, n_features=3000, seed=0):
    X = sp.random(n, n_features, density=0.01, random_state=seed, format="csr")
    y = (X @ np.random.default_rng(seed).normal(size=n_features) > 0).astype(np.int64)
    return X, y


@pytest.mark.parametrize("engine", ENGINES)
def test_mlp_classifier_fits_and_predicts_sparse_input_without_densifying(engine, no_densify):
    X, y = _text_like()
    clf = fd.MLPClassifier((16,), max_iter=25, random_state=0, backend=engine)
    with pytest.warns(Warning):  # max_iter reached
        clf.fit(X.tocsc(), y)
    assert clf.score(X, y) > 0.9
    proba = clf.predict_proba(sp.csr_array(X))
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)


def test_sparse_predictions_and_lbfgs_fits_equal_the_dense_ones():
    X, y = _text_like()
    clf = fd.MLPClassifier((8,), max_iter=3, random_state=0).fit(X.toarray(), y)
    np.testing.assert_allclose(clf.predict_proba(X), clf.predict_proba(X.toarray()), rtol=1e-5, atol=1e-6)
    # lbfgs takes sparse X as scikit-learn's does (densified for its full-batch gradient)
    sparse_fit = fd.MLPClassifier((8,), solver="lbfgs", max_iter=5, random_state=0).fit(X, y)
    dense_fit = fd.MLPClassifier((8,), solver="lbfgs", max_iter=5, random_state=0).fit(X.toarray(), y)
    np.testing.assert_array_equal(sparse_fit.coefs_[0], dense_fit.coefs_[0])
    reg = fd.MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    with pytest.warns(Warning):
        reg.fit(sp.coo_matrix(X), y.astype(float))
    np.testing.assert_allclose(reg.predict(X), reg.predict(X.toarray()), rtol=1e-5, atol=1e-6)


def test_sequential_fit_evaluate_predict_take_sparse_input(no_densify):
    X, y = _text_like()
    model = fd.Sequential([fd.Dense(16, activation="relu", input_shape=(X.shape[1],)),
                           fd.Dense(2, activation="softmax")], seed=0)
    model.compile(optimizer=fd.optimizers.Adagrad(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(X, y, epochs=8, batch_size=16, verbose=0, validation_split=0.2)
    loss, accuracy = model.evaluate(X, y, verbose=0)
    assert accuracy > 0.85 and model.predict(X).shape == (X.shape[0], 2)


def test_sparse_training_is_deterministic_and_matches_the_dense_sgd_path():
    """Plain SGD without weight decay: the lazy sparse step is exactly the dense step."""
    X, y = _text_like(n=64)
    def trained(x):
        net = fd.MLP([X.shape[1], 8, 2], "tanh", "softmax", dtype=np.float64, random_state=0, backend="cython")
        net.set_optimizer(fd.optimizers.SGD(0.5))
        for start in range(0, 64, 16):
            net.fused_step(net.as_inputs(x[start:start + 16]), y[start:start + 16], abi.LOSS_SPARSE_XENT)
        return net.params
    np.testing.assert_allclose(trained(X), trained(X.toarray()), rtol=1e-10, atol=1e-12)


# --- TextClassifier ----------------------------------------------------------------------------------

def _toy_texts(n=300, seed=0):
    rng = np.random.default_rng(seed)
    words = [["der", "die", "und", "nicht", "ist", "ich"], ["the", "and", "not", "is", "you", "what"],
             ["el", "los", "que", "una", "por", "esta"]]
    labels = rng.integers(0, 3, n)
    texts = [" ".join(rng.choice(words[label], 6)) + " " + "".join(rng.choice(list("xyzw"), 4)) for label in labels]
    return texts, np.array(["de", "en", "es"])[labels]


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd", "adam"])
def test_text_classifier_learns_languages_and_speaks_labels(optimizer, no_densify):
    texts, labels = _toy_texts()
    lr, batch, epochs = {"adagrad": (0.5, 16, 10), "sgd": (0.3, 2, 30), "adam": (0.01, 16, 10)}[optimizer]
    clf = fd.TextClassifier(dim=8, n_features=2**16, epochs=epochs, batch_size=batch, learning_rate=lr,
                            optimizer=optimizer)
    clf.fit(texts[:200], labels[:200])
    assert clf.score(texts[200:], labels[200:]) >= 0.95
    assert set(clf.predict(["und ich nicht", "what is the"])) <= {"de", "en", "es"}
    proba = clf.predict_proba(texts[:3])
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1, rtol=1e-5)


def test_text_classifier_bags_and_errors():
    clf = fd.TextClassifier(n_features=2**12, bag="mean")
    X = clf.transform(["ab ab", "", "c"])
    assert X.shape == (3, 2**12) and np.allclose(np.add.reduceat(X.data, X.indptr[:-1])[[0, 2]], 1, rtol=1e-6)
    words_only = fd.TextClassifier(n_features=2**12, char_ngrams=None).transform(["ab", "", "?!"])
    assert list(np.diff(words_only.indptr)) == [1, 0, 0]  # texts without words are empty rows
    with pytest.raises(ValueError, match="bag"):
        fd.TextClassifier(bag="max")
    with pytest.raises(TypeError, match="texts"):
        clf.transform("one string")
    with pytest.raises(RuntimeError, match="fit"):
        clf.predict(["x"])


def test_text_classifier_training_allocates_nothing_the_size_of_the_table():
    import tracemalloc
    texts, labels = _toy_texts(120)
    clf = fd.TextClassifier(dim=16, n_features=2**18, epochs=1, batch_size=32)
    X = clf.transform(texts)
    y = np.unique(labels, return_inverse=True)[1]
    clf.fit_transformed(X, y)  # warm up (the engine's first call)
    table = 2**18 * 16 * 4
    tracemalloc.start()
    clf.fit_transformed(X, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the model itself: params + Adagrad's state + the gradient buffer (the table's part never
    # written); no float64 temporary of the table, no dense gradient per step
    assert peak < 3.3 * table


def test_a_model_pickled_after_sparse_prediction_predicts_sparse_again():
    import pickle
    X, y = _text_like(n=40)
    net = fd.MLP([X.shape[1], 8, 2], "relu", "softmax", random_state=0)
    before = net.predict(X)  # builds the record of the dense stack above the sparse layer
    clone = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(clone.predict(X), before)
