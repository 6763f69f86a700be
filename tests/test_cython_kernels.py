"""Properties of the cython backend that the cross-backend tests do not reach: shapes on both
sides of its small/BLAS and blocking thresholds, odd sizes, determinism, thread counts, the
checks at the compiled entry points, NaN propagation."""
import numpy as np
import pytest

import fusedense as fd
from fusedense import abi, reference
from fusedense.activations import BY_ID, get_activation
from support import record

cython_backend = pytest.importorskip(
    "fusedense._backends.cython_backend",
    reason="the cython kernels are not built (python setup.py build_ext --inplace)")
from fusedense._kernels import layers  # noqa: E402

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
DTYPES = [np.float32, np.float64]

# (batch, fan_in, fan_out) around the thresholds in kernels/: BLAS from 8 rows and 2**20
# multiply-adds; micro-kernel tiles of 8 (AVX-512), 6 (AVX2) or 4 rows x 2 vectors; k slices of 256.
THRESHOLD_SHAPES = [
    (1, 1, 1), (1, 3, 17), (3, 17, 129), (4, 33, 16), (5, 31, 15), (7, 129, 33), (8, 1000, 129),
    (9, 1000, 128), (17, 1000, 65), (129, 17, 1000), (1000, 3, 17), (63, 128, 128),
]


def _rng():
    return np.random.default_rng(1234)


def _layer(dtype, m, k, n, rng):
    x = rng.standard_normal((m, k)).astype(dtype)
    W = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    return x, W, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", THRESHOLD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("activation", ["relu", "gelu", "softmax"])
def test_dense_forward_and_backward_match_reference_across_thresholds(dtype, shape, activation):
    rng = _rng()
    act = get_activation(activation)
    x, W, b = _layer(dtype, *shape, rng)
    y, z = fd.dense(x, W, b, activation, backend="cython", return_preactivation=True)
    y_ref, z_ref = reference.dense_forward(x, W, b, act, 0.0)
    np.testing.assert_allclose(z, z_ref, **TOL[dtype])
    np.testing.assert_allclose(y, y_ref, **TOL[dtype])
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dW, db = fd.dense_grad(dy, x, W, z=z, y=y, activation=activation, backend="cython")
    dx_ref, dW_ref, db_ref = reference.dense_backward(dy, x, W, z_ref, y_ref, act, 0.0)
    for got, want in ((dx, dx_ref), (dW, dW_ref), (db, db_ref)):
        np.testing.assert_allclose(got, want, **TOL[dtype])


# weights under 1 MB: micro-kernel path, 32-row blocks over OpenMP threads; above: BLAS path,
# 256-row blocks
NETWORKS = {"small_weights": [129, 1000, 17, 3], "large_weights": [300, 1000, 3]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3, 17, 31, 32, 33, 255, 256, 257, 1000])
@pytest.mark.parametrize("network", NETWORKS)
def test_mlp_forward_matches_reference_across_row_blocks(dtype, batch, network):
    rng = _rng()
    sizes = NETWORKS[network]
    acts = ["elu", "leaky_relu", "log_softmax"][-(len(sizes) - 1):]
    layout, alphas, n = fd.make_layout(sizes, acts)
    params = (rng.standard_normal(n) * 0.1).astype(dtype)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    out = fd.mlp_forward(x, params, layout, alphas, backend="cython")
    np.testing.assert_allclose(out, reference.mlp_forward(x, params, record(layout, alphas)), **TOL[dtype])


def _targets(loss_id, batch, classes, dtype, rng):
    if loss_id == abi.LOSS_SPARSE_XENT:
        return rng.integers(0, classes, batch)
    if loss_id == abi.LOSS_CATEGORICAL_XENT:
        return rng.dirichlet(np.ones(classes), batch).astype(dtype)
    if loss_id == abi.LOSS_BINARY_XENT:
        return (rng.random((batch, classes)) > 0.5).astype(dtype)
    return rng.standard_normal((batch, classes)).astype(dtype)


def _hyper(optimizer):
    hyper = np.zeros(abi.N_HYPER)
    if optimizer.startswith("sgd"):
        hyper[[abi.H_OPTIMIZER, abi.H_LR, abi.H_BETA1, abi.H_WEIGHT_DECAY]] = abi.OPT_SGD, 0.1, 0.9, 0.01
        hyper[abi.H_NESTEROV] = optimizer == "sgd_nesterov"
    else:
        hyper[[abi.H_OPTIMIZER, abi.H_LR, abi.H_BETA1, abi.H_BETA2, abi.H_EPS, abi.H_WEIGHT_DECAY]] = (
            abi.OPT_ADAM, 0.01, 0.9, 0.999, 1e-8, 0.1)
        hyper[abi.H_DECOUPLED] = optimizer == "adamw"
        hyper[abi.H_STEP] = 3
    return hyper


# micro-kernel path over OpenMP threads (every W under 1 MB) and BLAS path
TRAIN_NETWORKS = {"small_weights": ([100, 200, 17, 5], ["gelu", "tanh"]),
                  "large_weights": ([600, 500, 5], ["silu"])}


def _train_case(network, loss_id, optimizer, dtype, batch, rng):
    sizes, hidden = TRAIN_NETWORKS[network]
    last = "softmax" if loss_id < abi.LOSS_BINARY_XENT else "sigmoid"
    layout, alphas, n = fd.make_layout(sizes, hidden + [last])
    params = (rng.standard_normal(n) * 0.1).astype(dtype)
    state = rng.random((1 if optimizer.startswith("sgd") else 2, n)).astype(dtype)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    targets = _targets(loss_id, batch, sizes[-1], dtype, rng)
    return x, targets, params, state, record(layout, alphas)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 33, 300])
@pytest.mark.parametrize("loss_id", sorted(abi.LOSSES.values()))
@pytest.mark.parametrize("optimizer", ["sgd_nesterov", "adamw"])
@pytest.mark.parametrize("network", TRAIN_NETWORKS)
def test_mlp_train_step_matches_reference_across_thresholds(dtype, batch, loss_id, optimizer, network):
    rng = _rng()
    x, targets, params, state, layers_ = _train_case(network, loss_id, optimizer, dtype, batch, rng)
    targets = _targets(loss_id, batch, 5, dtype, rng)
    hyper = _hyper(optimizer)
    p_ref, s_ref = params.copy(), state.copy()
    loss_ref, grads_ref = reference.mlp_train_step(x, targets, p_ref, layers_, s_ref, loss_id, hyper)
    grads = np.empty_like(params)
    loss = cython_backend.mlp_train_step(x, targets, params, grads, state, layers_, loss_id, hyper, None, None)
    np.testing.assert_allclose(loss, loss_ref, rtol=TOL[dtype]["rtol"])
    for got, want in ((grads, grads_ref), (params, p_ref), (state, s_ref)):
        np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_out", [1, 2, 10, 15, 16, 17])
def test_train_step_dW_is_the_same_bits_as_dense_backward_at_every_width(dtype, n_out):
    """The training step makes dW in 16-row tasks, dense_backward in one call (both through
    micro_gemm_atb in kernels/gemm.pxd): the same bits. One identity layer under MSE, whose dz
    the test can repeat exactly: 2 (y − t) / (B n) in the layer's precision, y the outputs the
    step reports."""
    rng = _rng()
    batch, n_in = 37, 70  # dW's rows cross the 16-row tasks
    layout, alphas, n = fd.make_layout([n_in, n_out], ["identity"])
    params = rng.standard_normal(n).astype(dtype)
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    targets = rng.standard_normal((batch, n_out)).astype(dtype)
    grads, y = np.empty_like(params), np.empty((batch, n_out), dtype)
    cython_backend.mlp_train_step(x, targets, params.copy(), grads, np.zeros((1, n), dtype),
                                  record(layout, alphas), abi.LOSS_MSE, _hyper("sgd"), y, None)
    dz = 2 * (y - targets) * (dtype(1) / dtype(batch * n_out))
    dW, db = np.empty((n_in, n_out), dtype), np.empty(n_out, dtype)
    W = params[:n_in * n_out].reshape(n_in, n_out)
    layers.dense_backward(dz, x, W, None, y, get_activation("identity").id, 0.0, None, dW, db)
    np.testing.assert_array_equal(grads[:n_in * n_out].reshape(n_in, n_out), dW)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_out", [1, 2, 10, 15])
def test_a_narrow_dW_made_transposed_is_the_same_bits_as_made_directly(dtype, n_out):
    """micro_gemm_atb makes a dW with fewer than 16 columns as (dzᵀ x)ᵀ. Padded with zero
    columns to 16, dz takes the direct path (xᵀ dz), and each column of dW depends on its own
    column of dz alone: the narrow dW must be the first columns of the padded one, bit for bit."""
    rng = _rng()
    batch, n_in = 37, 70  # dW's rows cross the 16-row passes
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    dz = rng.standard_normal((batch, n_out)).astype(dtype)
    identity = get_activation("identity").id

    def dW_of(dy):
        dW, db = np.empty((n_in, dy.shape[1]), dtype), np.empty(dy.shape[1], dtype)
        layers.dense_backward(dy, x, np.zeros((n_in, dy.shape[1]), dtype), None, dy, identity, 0.0,
                              None, dW, db)
        return dW

    padded = np.zeros((batch, 16), dtype)
    padded[:, :n_out] = dz
    np.testing.assert_array_equal(dW_of(dz), dW_of(padded)[:, :n_out])


def test_mlp_train_step_with_gaps_in_params_matches_reference():
    """A layout that does not tile params (not make_layout's) still updates every entry."""
    rng = _rng()
    layout, alphas, n = fd.make_layout([6, 5, 3], ["relu", "softmax"])
    layout = layout.copy()
    layout[1, 0] += 4  # four unused parameters between the layers
    params = rng.standard_normal(n + 4)
    state = np.zeros((1, n + 4))
    x, labels = rng.standard_normal((7, 6)), rng.integers(0, 3, 7)
    hyper = _hyper("sgd")
    p_ref = params.copy()
    layers_ = record(layout, alphas, n + 4)
    _, grads_ref = reference.mlp_train_step(x, labels, p_ref, layers_, state.copy(), 0, hyper)
    grads = np.full_like(params, np.nan)
    cython_backend.mlp_train_step(x, labels, params, grads, state, layers_, 0, hyper, None, None)
    np.testing.assert_allclose(grads, grads_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(params, p_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1000, 1000), (9, 129)])
def test_repeated_calls_give_bitwise_identical_results(shape):
    rng = _rng()
    x, W, b = _layer(np.float32, shape[0], shape[1], 300, rng)
    dy = rng.standard_normal((shape[0], 300)).astype(np.float32)
    first = fd.dense_grad(dy, x, W, z=x @ W + b, activation="gelu", backend="cython")
    for _ in range(3):
        again = fd.dense_grad(dy, x, W, z=x @ W + b, activation="gelu", backend="cython")
        for a, b_ in zip(first, again):
            assert np.array_equal(a, b_)


def test_set_num_threads_reaches_openmp_and_blas():
    previous = fd.set_num_threads(1)
    try:
        assert cython_backend._activations.get_num_threads() == 1
        assert cython_backend._optim.get_num_threads() == 1
        assert cython_backend._layers.get_num_threads() == 1
        assert cython_backend.blas_num_threads() in (1, None)
        fd.set_num_threads(2)
        assert cython_backend._activations.get_num_threads() == 2
        assert cython_backend.blas_num_threads() in (2, None)
    finally:
        fd.set_num_threads(previous)


@pytest.mark.parametrize("activation", [a.name for a in BY_ID])
def test_elementwise_results_do_not_depend_on_the_thread_count(activation):
    rng = _rng()
    z = rng.standard_normal((300, 700)).astype(np.float32)  # above the parallel threshold
    dy = rng.standard_normal(z.shape).astype(np.float32)
    results = []
    previous = fd.set_num_threads(1)
    try:
        for n in (1, 2, 3):
            fd.set_num_threads(n)
            results.append((fd.activate(z, activation, backend="cython"),
                            fd.activation_grad(dy, z=z, activation=activation, backend="cython")))
    finally:
        fd.set_num_threads(previous)
    for y, dz in results[1:]:
        assert np.array_equal(y, results[0][0]) and np.array_equal(dz, results[0][1])


def test_mlp_forward_results_do_not_depend_on_the_thread_count():
    rng = _rng()
    layout, alphas, n = fd.make_layout([100, 64, 10], ["gelu", "softmax"])
    params = rng.standard_normal(n).astype(np.float32) * 0.1
    x = rng.standard_normal((3000, 100)).astype(np.float32)  # 94 row blocks, enough work for threads
    results = []
    previous = fd.set_num_threads(1)
    try:
        for n_threads in (1, 2, 3):
            fd.set_num_threads(n_threads)
            results.append(fd.mlp_forward(x, params, layout, alphas, backend="cython"))
    finally:
        fd.set_num_threads(previous)
    for out in results[1:]:
        assert np.array_equal(out, results[0])


def test_mlp_train_step_results_do_not_depend_on_the_thread_count():
    """On the micro-kernel path (the BLAS path is deterministic only for a fixed thread
    count: OpenBLAS splits its sums by thread)."""
    network = "small_weights"
    results = []
    previous = fd.set_num_threads(1)
    try:
        for n_threads in (1, 2, 3):
            fd.set_num_threads(n_threads)
            x, targets, params, state, layers_ = _train_case(
                network, abi.LOSS_SPARSE_XENT, "adamw", np.float32, 1000, _rng())  # enough work for threads
            grads = np.empty_like(params)
            loss = cython_backend.mlp_train_step(x, targets, params, grads, state, layers_,
                                                 abi.LOSS_SPARSE_XENT, _hyper("adamw"), None, None)
            results.append((loss, grads, params, state))
    finally:
        fd.set_num_threads(previous)
    for loss, *arrays in results[1:]:
        assert loss == results[0][0]
        assert all(np.array_equal(a, b) for a, b in zip(arrays, results[0][1:]))


def test_optimizer_results_do_not_depend_on_the_thread_count():
    rng = _rng()
    start = [rng.standard_normal(300_001) for _ in range(4)]
    results = []
    previous = fd.set_num_threads(1)
    try:
        for n in (1, 2):
            fd.set_num_threads(n)
            p, g, m, v = (a.copy() for a in start)
            v = np.abs(v)
            fd.adam_step(p, g, m, v, 2, backend="cython")
            results.append((p, m, v))
    finally:
        fd.set_num_threads(previous)
    for a, b in zip(*results):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["tanh", "elu", "sigmoid"])
def test_exp_based_activations_keep_relative_precision_at_every_magnitude(dtype, activation):
    # kernels/fastexp.h replaces libm here; a form like tanh = (1 - e)/(1 + e) would lose all
    # relative precision near 0, which random normal inputs barely reach
    tiny = np.finfo(dtype).tiny
    magnitudes = np.logspace(np.log10(tiny), 3, 20001).astype(dtype)
    z = np.concatenate([-magnitudes, magnitudes])
    y = fd.activate(z, activation, backend="cython")
    act = get_activation(activation)
    expected = act.forward(z.astype(np.float64), act.default_alpha).astype(dtype)
    normal = np.abs(expected) >= tiny  # fastexp flushes results below the normal range to 0
    np.testing.assert_allclose(y[normal], expected[normal], rtol=8 * np.finfo(dtype).eps, atol=0)


def test_tanh_keeps_the_sign_of_zero_and_saturates_at_infinity():
    z = np.array([-0.0, 0.0, -np.inf, np.inf, np.nan])
    y = fd.activate(z, "tanh", backend="cython")
    assert np.signbit(y[0]) and not np.signbit(y[1])
    np.testing.assert_array_equal(y[2:], [-1.0, 1.0, np.nan])


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "gelu_erf", "softmax"])
@pytest.mark.parametrize("batch", [2, 300])
def test_nan_in_the_input_propagates_to_its_row(activation, batch):
    rng = _rng()
    x, W, b = _layer(np.float64, batch, 40, 30, rng)
    x[1, 5] = np.nan
    y = fd.dense(x, W, b, activation, backend="cython")
    assert np.isnan(y[1]).all()
    assert not np.isnan(np.delete(y, 1, axis=0)).any()


def test_compiled_entry_points_reject_buffers_of_the_wrong_shape_or_dtype():
    x, W, b = np.ones((4, 3)), np.ones((3, 2)), np.ones(2)
    with pytest.raises(ValueError, match="y: expected shape"):
        layers.dense_forward(x, W, b, 1, 0.0, np.empty((4, 3)), None)
    with pytest.raises(TypeError, match="W: expected dtype"):
        layers.dense_forward(x, W.astype(np.float32), b, 1, 0.0, np.empty((4, 2)), None)
    with pytest.raises(ValueError, match="C-contiguous"):
        layers.dense_forward(np.ones((3, 4)).T, W, b, 1, 0.0, np.empty((4, 2)), None)
    with pytest.raises(ValueError, match="act_id"):
        layers.dense_forward(x, W, b, 99, 0.0, np.empty((4, 2)), None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_id", sorted(abi.LOSSES.values()))
def test_loss_matches_reference_with_and_without_a_gradient(dtype, loss_id):
    rng = _rng()
    outputs = rng.standard_normal((33, 7)).astype(dtype)
    targets = _targets(loss_id, 33, 7, dtype, rng)
    if loss_id == abi.LOSS_CATEGORICAL_XENT:
        targets *= dtype(0.8)  # rows summing to less than 1: the gradient's softmax·Σt term
    loss_ref, grad_ref = reference.loss_and_gradient(loss_id, outputs, targets)
    grad = np.empty_like(outputs)
    loss = layers.loss(loss_id, outputs, targets, grad)
    np.testing.assert_allclose(loss, loss_ref, rtol=TOL[dtype]["rtol"])
    np.testing.assert_allclose(grad, grad_ref, **TOL[dtype])
    assert layers.loss(loss_id, outputs, targets, None) == loss


@pytest.mark.parametrize("loss_id", [abi.LOSS_SPARSE_XENT, abi.LOSS_MSE])
def test_networks_of_more_than_64_layers_forward_and_train(loss_id):
    """No fixed layer cap: per-layer scratch is sized from the record."""
    rng = _rng()
    sizes = [5] * 100 + [3]
    layout, alphas, n = fd.make_layout(sizes, ["tanh"] * 99 + ["softmax"])
    layers_ = record(layout, alphas)
    params = rng.standard_normal(n) * 0.3
    x = rng.standard_normal((9, 5))
    targets = _targets(loss_id, 9, 3, np.float64, rng)
    out = np.empty((9, 3))
    cython_backend.mlp_forward(x, params, layers_, out)
    np.testing.assert_allclose(out, reference.mlp_forward(x, params, layers_), **TOL[np.float64])
    p_ref, state, hyper = params.copy(), np.zeros((1, n)), _hyper("sgd")
    loss_ref, grads_ref = reference.mlp_train_step(x, targets, p_ref, layers_, state.copy(), loss_id, hyper)
    grads = np.empty_like(params)
    loss = cython_backend.mlp_train_step(x, targets, params, grads, state, layers_, loss_id, hyper, None, None)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    np.testing.assert_allclose(grads, grads_ref, **TOL[np.float64])
