"""Keras's semantics in fd.Sequential: losses on probabilities or logits, sample and class weights,
kernel regularizers, use_bias=False, weighted metrics, naming, the fit arguments, the callbacks.

The training tests compare each engine with real Keras 3 (the JAX backend; skipped only when keras
is not installed) from the same initial weights, batch by batch without shuffling, and with the
NumPy oracle where Keras is not needed.
"""
import math
import os

import numpy as np
import pytest

import fusedense as fd
from fusedense import abi
from fusedense import losses as fd_losses
from fusedense.layout import layer_views

os.environ.setdefault("KERAS_BACKEND", "jax")


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _data(n=64, n_in=5, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)).astype(np.float32), rng.integers(0, n_classes, n)


def _regularizer(module, reg):
    """None, ``module.regularizers.l2(reg)`` for a number, ``L1L2(**reg)`` for a dict."""
    if reg is None:
        return None
    return module.regularizers.L1L2(**reg) if isinstance(reg, dict) else module.regularizers.l2(reg)


def _fd_model(out, reg=None, use_bias=True, backend=None):
    return fd.Sequential([fd.Input(shape=(5,)),
                          fd.layers.Dense(7, activation="tanh", use_bias=use_bias,
                                          kernel_regularizer=_regularizer(fd, reg)),
                          fd.layers.Dense(3, activation=out)], seed=0, backend=backend)


CASES = {  # output activation, loss (Keras's and fusedense's), regularizer, use_bias, fit arguments
    "softmax-probabilities": ("softmax", "sparse_categorical_crossentropy", None, True, {}),
    "linear-probabilities": (None, "sparse_categorical_crossentropy", None, True, {}),
    "linear-logits": (None, ("SparseCategoricalCrossentropy", True), None, True, {}),
    "softmax-as-logits": ("softmax", ("SparseCategoricalCrossentropy", True), None, True, {}),
    "sample_weight": ("softmax", "sparse_categorical_crossentropy", None, True,
                      {"sample_weight": np.random.default_rng(5).uniform(0, 2, 64)}),
    "class_weight": ("softmax", "sparse_categorical_crossentropy", None, True, {"class_weight": {0: 0.5, 2: 3.0}}),
    "l2": ("softmax", "sparse_categorical_crossentropy", 0.01, True, {}),
    "l1": ("softmax", "sparse_categorical_crossentropy", {"l1": 0.01}, True, {}),
    "l1_l2-logits": (None, ("SparseCategoricalCrossentropy", True), {"l1": 0.005, "l2": 0.02}, True, {}),
    "l2-probabilities-path": (None, "sparse_categorical_crossentropy", 0.01, True, {}),
    "no-bias": ("softmax", "sparse_categorical_crossentropy", None, False, {}),
    # softmax outputs: a linear layer read as probabilities is ill-conditioned (its own case above), and
    # its float32 rounding amplified through two epochs of L2 updates says nothing about the weighting
    "l2-weighted": ("softmax", "sparse_categorical_crossentropy", 0.01, True,
                    {"sample_weight": np.random.default_rng(6).uniform(0, 2, 64)}),
    "binary-probabilities": ("sigmoid", "binary_crossentropy", None, True, {}),
    "categorical-linear-probabilities": (None, "categorical_crossentropy", None, True, {}),
}


def _case_data(case):
    out, loss, reg, use_bias, fit_args = CASES[case]
    x, y = _data()
    if loss == "binary_crossentropy":
        y = (x[:, :3] > 0).astype(np.float32)
    elif loss == "categorical_crossentropy":
        y = np.eye(3, dtype=np.float32)[y]
    return x, y


_KERAS_RESULTS = {}


def _keras_result(keras, case):
    """(initial weights, weights after two epochs, history, evaluate) of real Keras, once per case."""
    if case not in _KERAS_RESULTS:
        out, loss, reg, use_bias, fit_args = CASES[case]
        loss = loss if isinstance(loss, str) else getattr(keras.losses, loss[0])(from_logits=loss[1])
        km = keras.Sequential([keras.Input((5,)),
                               keras.layers.Dense(7, activation="tanh", use_bias=use_bias,
                                                  kernel_regularizer=_regularizer(keras, reg)),
                               keras.layers.Dense(3, activation=out)])
        initial = [w + 0.3 if w.ndim == 1 else w for w in km.get_weights()]  # biases off zero
        if out is None and isinstance(loss, str):
            # linear outputs read as probabilities: rows summing near zero would amplify float32
            # rounding past any tolerance, so the last bias lifts every output well above zero
            initial[-1] = initial[-1] + 3.0
        km.set_weights(initial)
        km.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, metrics=["accuracy"])
        x, y = _case_data(case)
        history = km.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, **fit_args).history
        _KERAS_RESULTS[case] = initial, km.get_weights(), history, km.evaluate(x, y, verbose=0)
    return _KERAS_RESULTS[case]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", list(CASES))
def test_training_matches_keras(keras, backend, case):
    initial, trained, hk, evaluated = _keras_result(keras, case)
    out, loss, reg, use_bias, fit_args = CASES[case]
    loss = loss if isinstance(loss, str) else getattr(fd.losses, loss[0])(from_logits=loss[1])
    fm = _fd_model(out, reg, use_bias, backend)
    fm.set_weights(initial)
    fm.compile(optimizer=fd.optimizers.SGD(0.1), loss=loss, metrics=["accuracy"])
    x, y = _case_data(case)
    hf = fm.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, **fit_args).history
    for got, expected in zip(fm.get_weights(), trained):
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert hf["loss"] == pytest.approx(hk["loss"], rel=1e-4)
    assert hf["accuracy"] == pytest.approx(hk["accuracy"])
    assert fm.evaluate(x, y, verbose=0) == pytest.approx(evaluated, rel=1e-4)


def test_a_linear_output_with_a_probability_loss_warns_and_logits_do_not(recwarn):
    with pytest.warns(UserWarning, match="outputs are read as probabilities"):
        _fd_model(None).compile(loss="sparse_categorical_crossentropy")
    with pytest.warns(UserWarning, match="produced by a softmax activation and thus does not represent logits"):
        _fd_model("softmax").compile(loss=fd.losses.SparseCategoricalCrossentropy(from_logits=True))
    recwarn.clear()
    _fd_model(None).compile(loss=fd.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fd_model("softmax").compile(loss="sparse_categorical_crossentropy")
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("loss_id", [abi.LOSS_SPARSE_XENT, abi.LOSS_CATEGORICAL_XENT, abi.LOSS_BINARY_XENT])
@pytest.mark.parametrize("from_logits", [False, True])
def test_output_loss_gradient_matches_finite_differences(loss_id, from_logits):
    rng = np.random.default_rng(loss_id)
    out = rng.uniform(0.05, 0.9, (6, 4)) if not from_logits else rng.normal(size=(6, 4))
    out[0, 1] = 1e-9  # a clipped probability: Keras's gradient is zero there
    targets = rng.integers(0, 4, 6) if loss_id == abi.LOSS_SPARSE_XENT else rng.uniform(0, 1, (6, 4))
    weights = rng.uniform(0, 2, 6)
    loss, grad = fd_losses.output_loss_and_gradient(loss_id, out, targets, from_logits, weights)
    numeric = np.zeros_like(out)
    for i, j in np.ndindex(*out.shape):
        h = 5e-10 if (i, j) == (0, 1) and not from_logits else 1e-6 * max(1.0, abs(out[i, j]))
        up, down = out.copy(), out.copy()
        up[i, j] += h
        down[i, j] -= h
        numeric[i, j] = (fd_losses.output_loss_and_gradient(loss_id, up, targets, from_logits, weights)[0]
                         - fd_losses.output_loss_and_gradient(loss_id, down, targets, from_logits, weights)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-5)
    assert loss == pytest.approx(np.mean(weights * fd_losses._per_sample(loss_id, out, targets, from_logits)))


def test_the_regularized_step_equals_the_fused_step_when_the_penalty_is_zero(backend):
    """A zero regularizer (a zero kernel penalty in the layer record) leaves the fused step as it was."""
    x, y = _data()
    for opt in (fd.optimizers.SGD(0.1, momentum=0.9, nesterov=True), fd.optimizers.Adam(0.01), fd.optimizers.AdamW(0.01)):
        fused, split = _fd_model("softmax", backend=backend), _fd_model("softmax", reg=0.0, backend=backend)
        split.layers[0].kernel_regularizer = fd.regularizers.L2(0.0)
        for model in (fused, split):
            model.build()
            model.compile(optimizer=type(opt)(**opt.get_config()), loss="sparse_categorical_crossentropy")
        split.set_weights(fused.get_weights())
        hf = fused.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
        hs = split.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
        for a, b in zip(fused.get_weights(), split.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert hs["loss"] == pytest.approx(hf["loss"], rel=1e-6)
        assert split.network.step == fused.network.step == 8


@pytest.mark.parametrize("reg", [{"l2": 0.02}, {"l1": 0.01}, {"l1": 0.01, "l2": 0.02}], ids=["l2", "l1", "l1_l2"])
def test_kernel_regularizers_train_by_keras_formula(backend, reg):
    """One SGD step on the whole batch: W −= lr·(g + l1·sign(W) + 2·l2·W), b −= lr·g_b (the bias
    is not penalised), and the history's loss is the data loss + l1·Σ|W| + l2·ΣW² (Keras's)."""
    x, y = _data()
    model, twin = _fd_model("softmax", reg=reg, backend=backend), _fd_model("softmax", backend="numpy")
    for m in (model, twin):
        m.compile(optimizer=fd.optimizers.SGD(0.1), loss=fd.losses.SparseCategoricalCrossentropy(from_logits=False))
    twin.set_weights(model.get_weights())
    net = twin.network
    grads = np.zeros_like(net.params)
    data_loss = net.engine.mlp_gradient(x, y.astype(np.int64), net.params, grads, net.layers, twin.loss.id, None)
    W = model.layers[0].kernel.astype(np.float64)
    l1, l2 = reg.get("l1", 0.0), reg.get("l2", 0.0)
    penalty = l1 * np.abs(W).sum() + l2 * np.square(W).sum()
    expected = net.params.astype(np.float64) - 0.1 * grads
    expected_W = layer_views(expected, net.layout)[0][0]
    expected_W -= 0.1 * (l1 * np.sign(W) + 2 * l2 * W)
    history = model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(model.network.params, expected, rtol=1e-5, atol=1e-6)
    assert history["loss"][0] == pytest.approx(data_loss + penalty, rel=1e-5)


def test_l2_adds_the_penalty_to_the_loss_on_kernels_only():
    model = _fd_model("softmax", reg=0.01)
    model.compile(loss="sparse_categorical_crossentropy")
    x, y = _data()
    unregularized = _fd_model("softmax")
    unregularized.compile(loss="sparse_categorical_crossentropy")
    unregularized.set_weights(model.get_weights())
    kernel = model.layers[0].kernel
    assert model.evaluate(x, y, verbose=0) == pytest.approx(
        unregularized.evaluate(x, y, verbose=0) + 0.01 * float(np.square(kernel, dtype=np.float64).sum()))


def test_keras_names_count_per_class_over_the_session():
    a, b = fd.layers.Dense(2), fd.layers.Dense(2)
    prefix = a.name.rsplit("_", 1)[0] if a.name != "dense" else "dense"
    assert prefix == "dense" and b.name == f"dense_{int(a.name.rsplit('_', 1)[1]) + 1 if '_' in a.name else 1}"
    assert fd.layers.Dropout(0.1).name.startswith("dropout") and fd.layers.InputLayer((3,)).name.startswith("input_layer")
    assert fd.layers.Dense(2, name="out").name == "out"


def test_the_readme_example_runs_unchanged_with_import_fusedense_as_keras():
    import fusedense as keras
    x_train, y_train = _data(200, n_in=8, n_classes=4)
    model = keras.Sequential([
        keras.Input(shape=(8,)),
        keras.layers.Dense(32, activation="relu", kernel_initializer="he_normal"),
        keras.layers.Dropout(0.0),
        keras.layers.Dense(4),
        keras.layers.Activation("softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy()])
    history = model.fit(x_train, y_train, epochs=3, batch_size=32, validation_split=0.2, verbose=0,
                        callbacks=[keras.callbacks.EarlyStopping(patience=2)])
    assert set(history.history) == {"loss", "sparse_categorical_accuracy", "val_loss", "val_sparse_categorical_accuracy"}
    assert model.network.activations == ("relu", "softmax")
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "Dropout", "Dense", "Activation"]


def test_dropout_is_the_identity_at_inference_and_trains_inside_the_fused_step():
    x, y = _data()
    with_dropout = fd.Sequential([fd.Input(shape=(5,)), fd.layers.Dense(7, activation="tanh"), fd.layers.Dropout(0.5),
                                  fd.layers.Dense(3, activation="softmax")], seed=0)
    plain = _fd_model("softmax")
    plain.set_weights(with_dropout.get_weights())
    np.testing.assert_array_equal(with_dropout.predict(x), plain.predict(x))
    with_dropout.compile(loss="sparse_categorical_crossentropy")
    plain.compile(loss="sparse_categorical_crossentropy")
    # tests/test_dropout.py checks the masks; here: the same start, another loss (half the tanh units dropped)
    losses = [model.fit(x, y, verbose=0, shuffle=False).history["loss"][0] for model in (with_dropout, plain)]
    assert np.isfinite(losses).all() and losses[0] != losses[1]


def test_fit_arguments_initial_epoch_steps_per_epoch_validation_freq():
    x, y = _data(100)
    model = _fd_model("softmax")
    model.compile(loss="sparse_categorical_crossentropy")
    h = model.fit(x, y, epochs=5, initial_epoch=2, batch_size=10, steps_per_epoch=3, validation_data=(x, y),
                  validation_freq=2, verbose=0)
    assert h.epoch == [2, 3, 4] and h.params == {"verbose": 0, "epochs": 5, "steps": 3}
    assert len(h.history["loss"]) == 3 and len(h.history["val_loss"]) == 1  # epoch 4 (1-based) only
    assert model.network.step == 9
    # steps_per_epoch: the epochs take consecutive batches, so 3 + 3 + 4 steps visit the data exactly once
    twin, other = _fd_model("softmax"), _fd_model("softmax")
    for m in (twin, other):
        m.compile(loss="sparse_categorical_crossentropy")
    other.set_weights(twin.get_weights())
    twin.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    other.fit(x, y, epochs=3, batch_size=10, steps_per_epoch=3, shuffle=False, verbose=0)
    other.fit(x[90:], y[90:], epochs=1, batch_size=10, shuffle=False, verbose=0)
    for a, b in zip(twin.get_weights(), other.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_callbacks(tmp_path):
    x, y = _data(80)
    model = _fd_model("softmax")
    model.compile(optimizer=fd.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    batches = []
    rates = []
    callbacks = [
        fd.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1)),
        fd.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch),
                                    on_epoch_end=lambda epoch, logs: rates.append(model.optimizer.learning_rate)),
        fd.callbacks.CSVLogger(tmp_path / "log.csv"),
        fd.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.npz"), monitor="loss", save_best_only=True),
    ]
    model.fit(x, y, epochs=3, batch_size=20, verbose=0, callbacks=callbacks)
    assert batches == [0, 1, 2, 3] * 3 and rates == pytest.approx([0.1, 0.05, 0.1 / 3])
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0] == "epoch,accuracy,learning_rate,loss" and len(rows) == 4
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-01.npz", "ckpt-02.npz", "ckpt-03.npz"]
    np.testing.assert_array_equal(fd.load_model(tmp_path / "ckpt-03.npz").predict(x), model.predict(x))


def test_reduce_lr_on_plateau_and_terminate_on_nan(capsys):
    x, y = _data(40)
    model = _fd_model("softmax")
    model.compile(optimizer=fd.optimizers.SGD(1e-9), loss="sparse_categorical_crossentropy")
    reducer = fd.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1.0, min_lr=2e-10)
    h = model.fit(x, y, epochs=4, verbose=0, callbacks=[reducer])
    assert h.history["learning_rate"] == pytest.approx([1e-9, 1e-9, 5e-10, 2.5e-10])  # Keras logs the epoch's rate
    assert model.optimizer.learning_rate == pytest.approx(2e-10)  # min_lr
    bad = x.copy()
    bad[25] = np.nan
    model.compile(optimizer=fd.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    before = model.get_weights()
    h = model.fit(bad, y, epochs=3, batch_size=20, shuffle=False, verbose=0, callbacks=[fd.callbacks.TerminateOnNaN()])
    assert "Batch 2: Invalid loss, terminating training" in capsys.readouterr().out
    assert len(h.history["loss"]) == 1 and model.network.step == 1
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the first batch was applied
    with pytest.raises(FloatingPointError, match="epoch 1/3, batch 2 of 2"):
        model.fit(bad, y, epochs=3, batch_size=20, shuffle=False, verbose=0)


def test_class_weight_equals_the_sample_weights_it_stands_for(backend):
    x, y = _data()
    a, b = _fd_model("softmax", backend=backend), _fd_model("softmax", backend=backend)
    for m in (a, b):
        m.compile(loss="sparse_categorical_crossentropy")
    b.set_weights(a.get_weights())
    a.fit(x, y, class_weight={0: 2.0, 1: 0.5}, shuffle=False, verbose=0)
    b.fit(x, y, sample_weight=np.array([2.0, 0.5, 1.0])[y], shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    with pytest.raises(ValueError, match="class_weight and sample_weight"):
        a.fit(x, y, class_weight={0: 1.0}, sample_weight=np.ones(64), verbose=0)


OPTIMIZERS = {  # Keras's RMSprop (the default of compile) as its arguments, None: compile's default
    "compile-default": None,
    "rmsprop": {},
    "rmsprop-momentum": {"momentum": 0.9, "rho": 0.8},
    "rmsprop-weight-decay": {"weight_decay": 0.05, "epsilon": 1e-3},
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_rmsprop_trains_as_keras(keras, backend, name):
    """Two epochs from the same weights with Keras's RMSprop: the same weights and losses."""
    x, y = _data()
    km = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7, activation="tanh"),
                           keras.layers.Dense(3, activation="softmax")])
    initial = [w + 0.3 if w.ndim == 1 else w for w in km.get_weights()]
    km.set_weights(initial)
    fm = _fd_model("softmax", backend=backend)
    fm.set_weights(initial)
    args = OPTIMIZERS[name]
    for model, module in ((km, keras), (fm, fd)):
        optimizer = {} if args is None else {"optimizer": module.optimizers.RMSprop(learning_rate=0.01, **args)}
        model.compile(loss="sparse_categorical_crossentropy", **optimizer)
    hk = km.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    hf = fm.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    for got, expected in zip(fm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)
    assert hf["loss"] == pytest.approx(hk["loss"], rel=1e-4)
    assert type(fm.optimizer).__name__ == "RMSprop"


def test_rmsprop_refuses_what_it_does_not_do():
    with pytest.raises(NotImplementedError, match="centered"):
        fd.optimizers.RMSprop(centered=True)
    with pytest.raises(ValueError, match="rho"):
        fd.optimizers.RMSprop(rho=1.5)
