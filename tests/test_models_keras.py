"""The Keras-shaped front: Sequential / Dense with compile, fit, evaluate, predict, callbacks."""
import numpy as np
import pytest

import fusedense as fd


def _blobs(n=120, n_in=6, n_classes=3, seed=0):
    """Separable Gaussian blobs: a task a small network learns in a few epochs."""
    centers = np.random.default_rng(1234).normal(scale=3.0, size=(n_classes, n_in))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    return (centers[y] + rng.normal(size=(n, n_in))).astype(np.float32), y


def _model(n_in=6, n_out=3, out="softmax", seed=0):
    return fd.Sequential([fd.Dense(16, activation="relu", input_shape=(n_in,)),
                          fd.Dense(n_out, activation=out)], seed=seed)


def test_the_readme_snippet_runs_and_learns():
    x_train, y_train = _blobs(200)
    x_test, y_test = _blobs(60, seed=1)
    input_dim, num_classes = x_train.shape[1], 3
    model = fd.Sequential([
        fd.Dense(128, activation="relu", input_shape=(input_dim,)),
        fd.Dense(64, activation="relu"),
        fd.Dense(num_classes, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=10, batch_size=32, validation_split=0.2, verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    proba = model.predict(x_test)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert accuracy > 0.9 and loss < history.history["loss"][0]
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 10


def test_fit_decreases_the_loss_with_every_loss_and_optimizer():
    x, y = _blobs()
    onehot = np.eye(3, dtype=np.float32)[y]
    cases = [("sparse_categorical_crossentropy", y, "softmax", 3), ("categorical_crossentropy", onehot, "softmax", 3),
             ("binary_crossentropy", (y == 0).astype(np.float32), "sigmoid", 1), ("mse", onehot, None, 3),
             (fd.losses.SparseCategoricalCrossentropy(from_logits=True), y, "linear", 3)]
    for loss, targets, out, n_out in cases:
        for opt in ("adam", fd.optimizers.SGD(0.05, momentum=0.9), fd.optimizers.AdamW(0.01)):
            model = _model(n_out=n_out, out=out)
            model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
            h = model.fit(x, targets, epochs=5, batch_size=16, verbose=0).history
            assert h["loss"][-1] < h["loss"][0], (loss, opt)


def test_validation_split_takes_the_last_fraction_like_keras():
    x, y = _blobs(100)
    model = _model()
    model.compile(loss="sparse_categorical_crossentropy")
    h = model.fit(x, y, epochs=1, validation_split=0.25, verbose=0, shuffle=False).history
    assert h["val_loss"][0] == pytest.approx(model.evaluate(x[75:], y[75:], verbose=0))


def test_validation_data_and_metrics_are_reported():
    x, y = _blobs(90)
    model = _model()
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(x[:60], y[:60], validation_data=(x[60:], y[60:]), epochs=2, verbose=0).history
    loss, acc = model.evaluate(x[60:], y[60:], verbose=0)
    assert h["val_loss"][-1] == pytest.approx(loss) and h["val_accuracy"][-1] == pytest.approx(acc)


def test_training_accuracy_is_measured_on_each_batch_before_its_update_like_keras():
    x, y = _blobs(90)
    model, twin = _model(), _model()
    for m in (model, twin):
        m.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(x, y, batch_size=30, epochs=1, shuffle=False, verbose=0).history
    correct = []
    for s in (0, 30, 60):  # the same three updates, one fit per batch, predicting before each
        correct.append(twin.predict(x[s:s + 30]).argmax(axis=1) == y[s:s + 30])
        twin.fit(x[s:s + 30], y[s:s + 30], batch_size=30, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(model.network.params, twin.network.params)
    assert h["accuracy"][0] == pytest.approx(np.mean(correct))


@pytest.mark.parametrize("backend", ["cython", "numba", "numpy"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_an_epoch_in_one_engine_call_trains_as_batch_by_batch(backend, shuffle, monkeypatch):
    """fit runs an epoch as one engine call when nothing happens between its steps; a batch
    callback makes it step batch by batch: the same rows, updates, loss and training metrics."""
    x, y = _blobs(100)
    histories, params = [], []
    for batch_hook in (None, fd.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)):
        model = fd.Sequential([fd.Dense(16, activation="relu", input_shape=(6,)), fd.Dense(3, activation="softmax")],
                              seed=0, backend=backend)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        calls = []
        original = fd.MLP.fused_epoch
        monkeypatch.setattr(fd.MLP, "fused_epoch", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
        h = model.fit(x, y, batch_size=32, epochs=3, shuffle=shuffle, verbose=0, validation_split=0.2,
                      callbacks=[] if batch_hook is None else [batch_hook])
        assert len(calls) == (3 if batch_hook is None else 0)
        histories.append(h.history)
        params.append(model.network.params.copy())
    np.testing.assert_allclose(params[0], params[1], rtol=1e-5, atol=1e-6)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(histories[0][key], histories[1][key], rtol=1e-5)


def test_a_diverging_epoch_call_names_the_epoch_and_batch():
    x, y = _blobs(100)
    x[70] = np.nan  # in the third batch of 32, shuffle off
    model = _model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(FloatingPointError, match="epoch 1/2, batch 3 of 4"):
        model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)


def test_verbose_fit_prints_one_keras_like_line_per_epoch(capsys):
    x, y = _blobs(64)
    model = _model()
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=32, validation_split=0.25)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "2/2 - " in out and "s/step - loss: " in out and "val_accuracy: " in out
    assert "\r" not in out  # not a terminal: one line per epoch, no bar redrawn in place


def test_early_stopping_restores_the_best_weights():
    x, y = _blobs(80)

    class Recorder(fd.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = []

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append(self.model.get_weights())

    model = _model()
    model.compile(optimizer=fd.optimizers.SGD(2.0), loss="sparse_categorical_crossentropy")
    stopper = fd.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    recorder = Recorder()
    history = model.fit(x, y, epochs=30, verbose=0, callbacks=[recorder, stopper])
    losses = history.history["loss"]
    assert len(losses) < 30 and stopper.stopped_epoch == len(losses) - 1
    best = int(np.argmin(losses))
    for got, expected in zip(model.get_weights(), recorder.weights[best]):
        np.testing.assert_array_equal(got, expected)


def test_callback_can_stop_training():
    class StopAfterTwo(fd.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    x, y = _blobs(40)
    model = _model()
    model.compile(loss="sparse_categorical_crossentropy")
    assert len(model.fit(x, y, epochs=10, verbose=0, callbacks=[StopAfterTwo()]).history["loss"]) == 2


def test_model_builds_from_the_data_when_no_input_shape_is_given():
    x, y = _blobs(40)
    model = fd.Sequential([fd.Dense(8, activation="tanh"), fd.Dense(3, activation="softmax")], seed=1)
    model.compile(loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    assert model.layers[0].kernel.shape == (6, 8) and model.count_params() == 6 * 8 + 8 + 8 * 3 + 3


def test_input_dim_and_fd_input_are_accepted():
    a = fd.Sequential([fd.Dense(4, input_dim=3), fd.Dense(2)], seed=0)
    b = fd.Sequential([fd.Input(shape=(3,)), fd.Dense(4), fd.Dense(2)], seed=0)
    a.build()
    b.build()
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_predict_in_batches_equals_one_call():
    x, _ = _blobs(50)
    model = _model()
    np.testing.assert_array_equal(model.predict(x), model.predict(x, batch_size=7))


def test_summary_lists_layers_and_parameter_count(capsys):
    model = _model()
    model.summary()
    out = capsys.readouterr().out
    assert f"{model.layers[0].name} (Dense, relu)" in out and "(None, 16)" in out and "Total params: 163" in out


@pytest.mark.parametrize("labels, match", [
    (np.array([0, 1, 3] * 10), r"y: labels must lie in \[0, 3\)"),
    (np.array([0, 1] * 10), r"y: expected shape \(30,\)"),
    (np.array([-1, 0, 1] * 10), r"y: labels must lie"),
])
def test_fit_rejects_bad_labels_naming_the_argument(labels, match):
    x, _ = _blobs(30)
    model = _model()
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=match):
        model.fit(x, labels, verbose=0)


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="loss: unknown loss 'hinge'"):
        _model().compile(loss="hinge")
    with pytest.raises(ValueError, match="optimizer"):
        _model().compile(optimizer="nadam", loss="mse")
    with pytest.raises(ValueError, match="metrics"):
        _model().compile(loss="mse", metrics=["f1"])
    with pytest.raises(RuntimeError, match="compile"):
        _model().fit(*_blobs(10))
    with pytest.raises(ValueError, match="validation_split"):
        m = _model()
        m.compile(loss="sparse_categorical_crossentropy")
        m.fit(*_blobs(10), validation_split=1.5)
    with pytest.raises(ValueError, match=r"x: expected shape \(n_samples, 6\)"):
        _model().predict(np.zeros((2, 5)))


def test_fit_accepts_float_labels_and_label_columns_like_keras():
    x, y = _blobs(40)
    model = _model()
    model.compile(loss="sparse_categorical_crossentropy")
    model.fit(x, y.astype(np.float64).reshape(-1, 1), epochs=1, verbose=0)


def test_digits_test_accuracy_reaches_95_percent():
    pytest.importorskip("sklearn")
    X, y = fd.datasets.load_digits()
    x_train, x_test, y_train, y_test = fd.datasets.train_test_split(X, y, 0.2, seed=0)
    model = fd.Sequential([fd.Dense(128, activation="relu", input_shape=(64,)), fd.Dense(64, activation="relu"),
                           fd.Dense(10, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10, batch_size=32, validation_split=0.2, verbose=0)
    assert model.evaluate(x_test, y_test, verbose=0)[1] >= 0.95


@pytest.mark.parametrize("backend", ["cython", "numba", "numpy"])
def test_train_on_batch_is_one_fit_step_and_reports_the_batch_before_it(backend):
    """Keras's train_on_batch: one update, the same as a one-batch epoch of fit; the returned loss
    and metrics are the batch's before the update (what evaluate says just before it)."""
    x, y = _blobs(40)
    model, twin = (fd.Sequential([fd.Dense(16, activation="relu", input_shape=(6,)), fd.Dense(3, activation="softmax")],
                                 seed=0, backend=backend) for _ in range(2))
    for m in (model, twin):
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    for step in range(3):
        before = model.evaluate(x, y, verbose=0, return_dict=True)
        result = model.train_on_batch(x, y, return_dict=step == 2)
        twin.fit(x, y, batch_size=40, epochs=1, shuffle=False, verbose=0)
        np.testing.assert_allclose(model.network.params, twin.network.params, rtol=1e-5, atol=1e-7)
        if step < 2:
            assert result == pytest.approx([before["loss"], before["accuracy"]], rel=1e-5)
        else:
            assert result == pytest.approx(before, rel=1e-5)
    assert model.network.step == 3


def test_train_on_batch_weights_and_errors_follow_keras():
    x, y = _blobs(30)
    plain = _model()
    with pytest.raises(RuntimeError, match="train_on_batch: compile the model first"):
        plain.train_on_batch(x, y)
    weighted, by_class = _model(), _model()
    for m in (weighted, by_class):
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    table = {0: 1.0, 1: 3.0, 2: 0.5}
    loss = by_class.train_on_batch(x, y, class_weight=table)
    assert loss == pytest.approx(weighted.train_on_batch(x, y, sample_weight=np.array([table[c] for c in y])))
    np.testing.assert_array_equal(weighted.network.params, by_class.network.params)
    with pytest.raises(ValueError, match="class_weight and sample_weight"):
        weighted.train_on_batch(x, y, sample_weight=np.ones(30), class_weight=table)
    with pytest.raises(ValueError, match="sample_weight: expected one weight per sample"):
        weighted.train_on_batch(x, y, sample_weight=np.ones(29))
    assert isinstance(weighted.test_on_batch(x, y), float)
    assert weighted.test_on_batch(x, y, return_dict=True) == {"loss": weighted.evaluate(x, y, verbose=0)}


def test_get_layer_and_shapes_follow_keras():
    model = _model()
    assert model.get_layer(index=1) is model.layers[1]
    assert model.get_layer(model.layers[0].name) is model.layers[0]
    assert (model.input_shape, model.output_shape) == ((None, 6), (None, 3))
    for kwargs, message in [({"name": "nope"}, "No such layer: nope"), ({"index": 2}, "at index 2 but model only has 2"),
                            ({}, "Provide either a layer name or layer index"),
                            ({"name": "dense", "index": 0}, "Provide only a layer name or a layer index")]:
        with pytest.raises(ValueError, match=message):
            model.get_layer(**kwargs)
    with pytest.raises(ValueError, match="output_shape: the model has no weights yet"):
        fd.Sequential([fd.Dense(3)]).output_shape


def test_set_weights_checks_every_array_before_writing_any():
    for model in (_model(), fd.MLP([6, 16, 3], ["relu", "softmax"], random_state=0)):
        before = [w.copy() for w in model.get_weights()]
        bad = [w + 1 for w in before]
        bad[-1] = np.zeros(before[-1].size + 1)
        with pytest.raises(ValueError, match=rf"weights\[{len(bad) - 1}\]: expected shape"):
            model.set_weights(bad)
        for got, was in zip(model.get_weights(), before):
            np.testing.assert_array_equal(got, was)
