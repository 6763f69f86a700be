"""fd.MLP: the flat-buffer network that every model front runs on."""
import numpy as np
import pytest

import fusedense as fd
from fusedense import abi, reference
from fusedense.network import MLP
from fusedense.sparse import CSR


def _data(rng, n=24, n_in=5, n_classes=3, dtype=np.float64):
    return rng.normal(size=(n, n_in)).astype(dtype), rng.integers(0, n_classes, n)


@pytest.mark.parametrize("optimizer", [fd.optimizers.Adam(0.01), fd.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                                       fd.optimizers.AdamW(0.01, weight_decay=0.1)])
def test_train_step_matches_reference(optimizer):
    rng = np.random.default_rng(0)
    x, y = _data(rng)
    net = MLP([5, 7, 3], "tanh", "softmax", dtype=np.float64, random_state=1)
    net.set_optimizer(optimizer)
    params = net.params.copy()
    state = np.zeros((optimizer.state_rows, net.n_params))
    for step in range(1, 4):
        loss = net.train_step(x, y, loss="sparse_categorical_crossentropy")
        ref_loss, ref_grads = reference.mlp_train_step(x, y, params, net.layers, state,
                                                       abi.LOSS_SPARSE_XENT, optimizer.hyper(step))
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        np.testing.assert_allclose(net.grads, ref_grads, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(net.params, params, rtol=1e-10, atol=1e-12)


def test_predict_matches_reference_forward_in_any_batch_size():
    rng = np.random.default_rng(1)
    x, _ = _data(rng, n=37, dtype=np.float32)
    net = MLP([5, 16, 8, 3], ["relu", "gelu", "softmax"], random_state=0)
    expected = reference.mlp_forward(x, net.params, net.layers)
    np.testing.assert_allclose(net.predict(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.predict(x, batch_size=8), expected, rtol=1e-5, atol=1e-6)


def test_predict_converts_float64_and_lists_to_model_dtype():
    net = MLP([3, 2], [None], random_state=0)
    out = net.predict([[1.0, 2.0, 3.0]])
    assert out.dtype == np.float32 and out.shape == (1, 2)
    np.testing.assert_allclose(out, net.predict(np.array([[1, 2, 3]], dtype=np.float64)))


def test_training_decreases_the_loss():
    rng = np.random.default_rng(2)
    x, y = _data(rng, n=64, dtype=np.float32)
    net = MLP([5, 32, 3], "relu", "softmax", random_state=0)
    net.set_optimizer(fd.optimizers.Adam(0.01))
    losses = [net.train_step(x, y, "sparse_categorical_crossentropy") for _ in range(200)]
    assert losses[-1] < 0.5 * losses[0]


def test_same_seed_gives_same_weights_and_glorot_bounds():
    a = MLP([100, 50, 10], random_state=7)
    b = MLP([100, 50, 10], random_state=7)
    np.testing.assert_array_equal(a.params, b.params)
    W, bias = a.weights[0]
    assert np.abs(W).max() <= np.sqrt(6 / 150) and not bias.any()
    assert np.abs(W).max() > 0.9 * np.sqrt(6 / 150)


def test_weights_are_views_into_the_flat_buffer():
    net = MLP([3, 4, 2], random_state=0)
    net.weights[1][1][:] = 5.0
    assert (net.params[-2:] == 5.0).all()


def test_diverging_training_raises_a_clear_error():
    net = MLP([2, 4, 1], "relu", random_state=0)
    net.set_optimizer(fd.optimizers.SGD(learning_rate=1e30))
    x = np.array([[1e10, 1e10]], np.float32)
    with pytest.raises(FloatingPointError, match="diverged"), np.errstate(all="ignore"):
        for _ in range(5):
            net.train_step(x, np.array([[1.0]]), "mse")


@pytest.mark.parametrize("x, match", [(np.zeros((2, 4)), r"shape \(n_samples, 3\)"), (np.zeros(3), "shape"),
                                      (np.zeros((0, 3)), "at least one sample"), (np.array([["a", "b", "c"]]), "numbers")])
def test_predict_rejects_bad_inputs_naming_the_argument(x, match):
    net = MLP([3, 2], random_state=0)
    with pytest.raises((ValueError, TypeError), match=match) as info:
        net.predict(x)
    assert str(info.value).startswith("x:")


def test_train_step_rejects_labels_out_of_range():
    net = MLP([3, 2], [None], output_activation="softmax", random_state=0)
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 2\)"):
        net.train_step(np.zeros((2, 3)), np.array([0, 2]), "sparse_categorical_crossentropy")


def test_cross_entropy_needs_a_matching_output_activation():
    net = MLP([3, 2], "relu", output_activation="relu", random_state=0)
    with pytest.raises(ValueError, match="softmax"):
        net.train_step(np.zeros((2, 3)), np.array([0, 1]), "sparse_categorical_crossentropy")


def test_unknown_dtype_and_initializer_are_rejected():
    with pytest.raises(TypeError, match="dtype"):
        MLP([3, 2], dtype=np.int32)
    with pytest.raises(ValueError, match="init"):
        MLP([3, 2], init="ones")
    assert not MLP([3, 2], init="zeros").params.any()  # "zeros" exists (fd.TextClassifier's output layer)


def _epoch_pair(net_args, x, targets, batch_size, order):
    """(net after train_epoch, its returned loss, net after the same steps one fused_step at a time)."""
    nets = []
    for _ in range(2):
        net = MLP(*net_args, random_state=0)
        net.set_optimizer(fd.optimizers.Adam(0.01))
        nets.append(net)
    loss = nets[0].train_epoch(x, targets, abi.LOSS_SPARSE_XENT, batch_size, order)
    rows = np.arange(len(x)) if order is None else order
    total = sum(nets[1].fused_step(np.ascontiguousarray(x[rows[s:s + batch_size]]), targets[rows[s:s + batch_size]],
                                   abi.LOSS_SPARSE_XENT) * len(rows[s:s + batch_size])
                for s in range(0, len(x), batch_size))
    return nets[0], loss, nets[1], total / len(x)


@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("batch_size", [7, 24, 100])  # a partial last batch; the whole set; more than the set
def test_train_epoch_is_one_fused_step_per_batch_of_the_visited_rows(shuffled, batch_size):
    rng = np.random.default_rng(3)
    x, y = _data(rng)
    order = rng.permutation(len(x)) if shuffled else None
    net, loss, stepped, expected = _epoch_pair(([5, 7, 3], "tanh", "softmax", None, np.float64), x, y, batch_size, order)
    assert loss == pytest.approx(expected, rel=1e-14)
    np.testing.assert_array_equal(net.params, stepped.params)
    assert net.step == stepped.step == -(-len(x) // batch_size)


def test_train_epoch_reports_each_batch_outputs_in_visiting_order():
    rng = np.random.default_rng(4)
    x, y = _data(rng, dtype=np.float32)
    net = MLP([5, 7, 3], "relu", "softmax", random_state=0)
    before = net.params.copy()
    order = rng.permutation(len(x))
    outputs = np.empty((len(x), 3), np.float32)
    net.train_epoch(x, y, abi.LOSS_SPARSE_XENT, len(x), order, outputs)  # one batch: outputs before any update
    np.testing.assert_allclose(outputs, reference.mlp_forward(x[order], before, net.layers), rtol=1e-5)


def test_train_epoch_reuses_its_gather_buffers_until_the_shapes_change():
    """The batch-by-batch loop (sparse rows; dense rows go to the engine's epoch call)."""
    rng = np.random.default_rng(5)
    x, y = _data(rng, dtype=np.float32)
    x = CSR.from_dense(x)
    net = MLP([5, 4, 3], "relu", "softmax", random_state=0)  # (a sparse first layer needs one above it)
    net.train_epoch(x, y, abi.LOSS_SPARSE_XENT, 8, rng.permutation(x.shape[0]))
    buffers = net._batch_rows
    net.train_epoch(x, y, abi.LOSS_SPARSE_XENT, 8, rng.permutation(x.shape[0]))
    assert net._batch_rows is buffers
    net.train_epoch(x, y, abi.LOSS_SPARSE_XENT, 5, rng.permutation(x.shape[0]))
    assert net._batch_rows[1].shape == (5,)


def test_train_epoch_on_dense_rows_is_one_engine_call_with_the_steps_of_fused_step(monkeypatch):
    rng = np.random.default_rng(6)
    x, y = _data(rng, dtype=np.float32)
    order = rng.permutation(len(x))
    stepped, epoch = (MLP([5, 4, 3], "tanh", "softmax", random_state=0) for _ in range(2))
    for start in range(0, len(x), 8):
        rows = order[start:start + 8]
        stepped.fused_step(np.ascontiguousarray(x[rows]), y[rows], abi.LOSS_SPARSE_XENT)
    calls = []
    monkeypatch.setattr(MLP, "fused_step", lambda *a, **k: calls.append(1))
    epoch.train_epoch(x, y, abi.LOSS_SPARSE_XENT, 8, order)
    assert not calls and epoch.step == stepped.step
    np.testing.assert_array_equal(epoch.params, stepped.params)


def test_a_step_the_kernel_rejects_is_not_counted():
    net = MLP([3, 2], [None], output_activation="softmax", random_state=0)
    net.train_step(np.zeros((2, 3)), np.array([0, 1]), "sparse_categorical_crossentropy")
    with pytest.raises(ValueError):
        net.fused_step(np.zeros((2, 3), np.float32), np.array([0, 5]), abi.LOSS_SPARSE_XENT)  # label out of range
    assert net.step == 1
