"""The cython training steps update each layer inside the gradient pass (kernels/layers.pyx:
every slice of W right after its gradient, the bias after its column sums, a BLAS-path layer
after its dx) when the layers tile the parameter buffer; a layout with gaps takes a separate
optimizer pass over the finished gradient instead. Both must give the same bits, for every
optimizer, both dtypes, the micro-kernel and the BLAS path, and any thread count."""
import numpy as np
import pytest

import fusedense as fd
from fusedense import abi, reference

from support import assert_close, make_hyper, record

cython_backend = pytest.importorskip(
    "fusedense._backends.cython_backend",
    reason="the cython kernels are not built (python setup.py build_ext --inplace)")

OPTIMIZERS = {  # name: (make_hyper's optimizer, momentum)
    "sgd": ("sgd", 0.0), "momentum": ("sgd", 0.9), "nesterov": ("nesterov", 0.9),
    "adam": ("adam", 0.0), "adamw": ("adamw", 0.0), "rmsprop": ("rmsprop", 0.9)}
# every W under 1 MB: micro-kernels; a 600 x 500 W: BLAS (its dx reads W before the update)
NETWORKS = {"micro": ([70, 40, 17, 5], ["relu", "tanh", "softmax"]),
            "blas": ([600, 500, 5], ["silu", "softmax"])}


def _hyper(optimizer):
    name, momentum = OPTIMIZERS[optimizer]
    return make_hyper(name, lr=0.05, step=3, momentum=momentum, weight_decay=0.01)


def _state_rows(optimizer):
    return 1 if OPTIMIZERS[optimizer][0] in ("sgd", "nesterov") else 2


def _case(network, optimizer, dtype, batch, gap, rng):
    """A network, its data and optimizer state; gap: one unused parameter after the layers,
    so that they do not tile the buffer."""
    sizes, activations = NETWORKS[network]
    layout, alphas, n = fd.make_layout(sizes, activations)
    params = np.append(rng.standard_normal(n) * 0.1, np.ones(gap)).astype(dtype)
    state = np.pad(rng.random((_state_rows(optimizer), n)), ((0, 0), (0, gap)), constant_values=0.5).astype(dtype)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], batch)
    return x, labels, params, state, layout, alphas


def _step(x, labels, params, state, layout, alphas, hyper):
    grads = np.full_like(params, np.nan)  # every element must be written
    loss = cython_backend.mlp_train_step(x, labels, params, grads, state, record(layout, alphas),
                                         abi.LOSS_SPARSE_XENT, hyper, None, None)
    return loss, grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("network", NETWORKS)
def test_update_inside_the_gradient_pass_gives_the_bits_of_a_separate_pass(dtype, optimizer, network):
    hyper = _hyper(optimizer)
    tiled = _case(network, optimizer, dtype, 9, 0, np.random.default_rng(3))
    gapped = _case(network, optimizer, dtype, 9, 1, np.random.default_rng(3))
    n = tiled[2].size
    loss, grads = _step(*tiled, hyper)
    gapped_loss, gapped_grads = _step(*gapped, hyper)
    x, labels, params, state, layout, alphas = tiled
    assert loss == gapped_loss
    assert np.array_equal(grads, gapped_grads[:n])
    assert np.array_equal(params, gapped[2][:n])
    assert np.array_equal(state, gapped[3][:, :n])
    ref = _case(network, optimizer, dtype, 9, 1, np.random.default_rng(3))
    ref_loss, ref_grads = reference.mlp_train_step(*ref[:3], record(layout, alphas), ref[3],
                                                   abi.LOSS_SPARSE_XENT, hyper)
    assert_close(loss, ref_loss, dtype)
    assert_close(gapped_grads, ref_grads, dtype)  # the gap: a zero gradient
    assert_close(gapped[2], ref[2], dtype)  # the gap decays with the weight decay, as in the reference
    assert_close(gapped[3], ref[3], dtype)


@pytest.mark.parametrize("optimizer", ["nesterov", "adamw"])
def test_embedding_step_updates_the_layers_and_the_table_like_a_separate_pass(optimizer):
    """The table takes its step after the scatter-add, the layers inside the gradient pass."""
    net = fd.EmbeddingMLP(11, 3, 4, [6, 5, 11], "tanh", "identity", dtype=np.float32, random_state=0)
    rng = np.random.default_rng(4)
    tokens, labels = rng.integers(0, 11, (40, 4)), rng.integers(0, 11, 40)
    hyper = _hyper(optimizer)
    results = []
    for gap in (0, 1):
        params = np.concatenate([net.params, np.ones(gap, net.params.dtype)])
        state = np.random.default_rng(5).random((_state_rows(optimizer), net.n_params))
        state = np.pad(state, ((0, 0), (0, gap)), constant_values=0.5).astype(params.dtype)
        grads = np.full_like(params, np.nan)
        loss = cython_backend.embedding_train_step(tokens, labels, params, grads, state, net.layers, hyper, 11,
                                                   None)
        results.append((loss, grads[:net.n_params], params[:net.n_params], state[:, :net.n_params]))
    (loss, *arrays), (gapped_loss, *gapped_arrays) = results
    assert loss == gapped_loss
    assert all(np.array_equal(a, b) for a, b in zip(arrays, gapped_arrays))


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_update_inside_the_gradient_pass_does_not_depend_on_the_thread_count(optimizer):
    """Enough work (batch x weights) for the micro-kernel path to use the threads."""
    hyper = _hyper(optimizer)
    results = []
    previous = fd.set_num_threads(1)
    try:
        for n_threads in (1, 2):
            fd.set_num_threads(n_threads)
            case = _case("micro", optimizer, np.float32, 6000, 0, np.random.default_rng(6))
            loss, grads = _step(*case, hyper)
            results.append((loss, grads, case[2], case[3]))
    finally:
        fd.set_num_threads(previous)
    (loss, *arrays), (loss_2, *arrays_2) = results
    assert loss == loss_2
    assert all(np.array_equal(a, b) for a, b in zip(arrays, arrays_2))
