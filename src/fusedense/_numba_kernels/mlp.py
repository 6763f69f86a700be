"""A whole network over a flat parameter buffer (``fusedense.layout``): forward, and a fused
training step (forward, loss, backward, optimizer update) — one call, no Python in between.

``layers`` is the read-only ``fusedense.layout.LAYER`` record array; its fields are read as
``layers[l]["fan_in"]`` (plain loads)."""
import numpy as np

from .. import abi
from .activations import IDENTITY
from .dense import dense_backward, dense_rows, gemm_rows
from .dropout import apply_dropout
from .jit import kernel
from .losses import BINARY_XENT, CATEGORICAL_XENT, SPARSE_XENT, loss_and_gradient
from .optimizers import adam_step, rmsprop_step, sgd_step


@kernel
def layer_params(params, layers, layer):
    """Views (W, b) of one layer in the flat buffer: W (fan_in × fan_out, C order), then b."""
    record = layers[layer]
    offset, fan_in, fan_out = record["offset"], record["fan_in"], record["fan_out"]
    w_end = offset + fan_in * fan_out
    return params[offset:w_end].reshape((fan_in, fan_out)), params[w_end:w_end + fan_out]


@kernel
def _widest(layers, n_layers):
    """The widest output among the first n_layers layers (at least 1)."""
    width = 1
    for layer in range(n_layers):
        width = max(width, layers[layer]["fan_out"])
    return width


@kernel
def _forward_rows_per_block(n_rows, layers, itemsize):
    """mlp_forward's row block: a block's activations (GEMM_BLOCK_BYTES at the widest layer)
    stay in cache from one layer to the next."""
    return min(n_rows, gemm_rows(_widest(layers, layers.size), itemsize))


@kernel
def mlp_forward_workspace_size(n_rows, layers, itemsize):
    """Elements of the workspace mlp_forward needs: two blocks of hidden activations."""
    return 2 * _forward_rows_per_block(n_rows, layers, itemsize) * _widest(layers, layers.size - 1)


@kernel
def mlp_forward(x, params, layers, out, workspace):
    """Every layer, one block of rows at a time. Keeps no pre-activations; the hidden
    activations ping-pong between the two halves of ``workspace``, supplied by the caller so
    that repeated predictions allocate nothing but their output. Returns 0, or, computing
    nothing, the size it needs when ``workspace`` is smaller (one call, not two, in the
    steady state: at batch 1 a call costs as much as the arithmetic)."""
    needed = mlp_forward_workspace_size(x.shape[0], layers, out.itemsize)
    if workspace.size < needed:
        return needed
    n_rows = x.shape[0]
    n_layers = layers.size
    block = _forward_rows_per_block(n_rows, layers, out.itemsize)
    half = workspace.size // 2
    for start in range(0, n_rows, block):
        stop = min(n_rows, start + block)
        h = out[start:stop]  # typed like the layer outputs below; overwritten before it is read
        for layer in range(n_layers):
            W, b = layer_params(params, layers, layer)
            if layer == n_layers - 1:
                dst = out[start:stop]
            else:
                first = (layer % 2) * half
                dst = workspace[first:first + (stop - start) * W.shape[1]].reshape((stop - start, W.shape[1]))
            act_id, alpha = layers[layer]["activation"], layers[layer]["alpha"]
            if layer == 0:  # x is kept out of h's type: x may be read-only, h never is
                dense_rows(x[start:stop], W, b, act_id, alpha, dst, dst)
            else:
                dense_rows(h, W, b, act_id, alpha, dst, dst)
            h = dst
    return 0


@kernel
def mlp_train_step(x, labels, targets, weights, params, grads, opt_state, layers, loss_id, hyper, outputs):
    """One minibatch: forward (keeping every z and y; a copy of the outputs in ``outputs``
    unless it is empty), fused loss, backward into ``grads``, optimizer update of ``params``
    in place (for a finite loss). Returns the loss.

    ``labels`` (int64) is used by the sparse cross-entropy, ``targets`` by the other losses;
    the unused one is empty. Cross-entropy losses fold the last activation in: their gradient
    is w.r.t. the last pre-activation, so the last layer backpropagates as identity.
    Layers with a dropout rate draw their masks for step hyper[H_STEP].
    """
    loss = loss_and_gradients(x, labels, targets, weights, params, grads, layers, loss_id,
                              grads[:0].reshape((0, 0)), outputs, hyper[abi.H_PENALTY_SCALE],
                              np.int64(hyper[abi.H_STEP]))
    return update_if_finite(loss, params, grads, opt_state, hyper)


@kernel
def mlp_gradient(x, labels, targets, weights, params, grads, layers, loss_id):
    """mlp_train_step without the optimizer update and without dropout (the contract's
    mlp_gradient): the record's kernel penalties as they are (scale 1)."""
    return loss_and_gradients(x, labels, targets, weights, params, grads, layers, loss_id,
                              grads[:0].reshape((0, 0)), grads[:0].reshape((0, 0)), 1.0, np.int64(0))


@kernel
def add_kernel_penalty(W, dW, l1, l2):
    """dW += l1·sign(W) + 2·l2·W while dW is fresh from its product; returns the penalty
    l1·Σ|W| + l2·ΣW² (summed in float64, as reference.kernel_penalty)."""
    sum_abs = 0.0
    sum_sq = 0.0
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            w = W[i, j]
            sum_abs += abs(w)
            sum_sq += w * w
            g = 2.0 * l2 * w
            if w > 0:
                g += l1
            elif w < 0:
                g -= l1
            dW[i, j] += g
    return l1 * sum_abs + l2 * sum_sq


@kernel
def loss_and_gradients(x, labels, targets, weights, params, grads, layers, loss_id, dx, outputs, penalty_scale,
                       step):
    """mlp_train_step without the optimizer update: the loss, ``grads``, dLoss/dx into ``dx``
    unless it is (0, 0) (an embedding in front of the network needs it), the outputs into
    ``outputs`` unless it is empty; ``weights`` (the rows' sample weights) may be empty. The
    loss and each dW include the record's kernel penalties times ``penalty_scale``.
    ``step`` >= 1: each layer with a dropout rate reads its input through that step's mask
    (dropout.apply_dropout) and its input gradient goes through the same mask; 0: no dropout."""
    n_rows = x.shape[0]
    n_layers = layers.size
    starts = np.empty(n_layers + 1, dtype=np.int64)  # layer l's z/y rows in the workspaces
    dropped = np.zeros(n_layers + 1, dtype=np.int64)  # layer l's masked input in ``inputs``
    starts[0] = 0
    n_covered = 0
    for layer in range(n_layers):
        starts[layer + 1] = starts[layer] + n_rows * layers[layer]["fan_out"]
        n_covered += (layers[layer]["fan_in"] + 1) * layers[layer]["fan_out"]
        masked = step > 0 and layers[layer]["dropout"] > 0.0
        dropped[layer + 1] = dropped[layer] + (n_rows * layers[layer]["fan_in"] if masked else 0)
    zs = np.empty(starts[n_layers], dtype=params.dtype)
    ys = np.empty(starts[n_layers], dtype=params.dtype)
    inputs = np.empty(dropped[n_layers], dtype=params.dtype)

    h = ys[:0].reshape((0, 0))
    for layer in range(n_layers):
        W, b = layer_params(params, layers, layer)
        shape = (n_rows, W.shape[1])
        z = zs[starts[layer]:starts[layer + 1]].reshape(shape)
        y = ys[starts[layer]:starts[layer + 1]].reshape(shape)
        if dropped[layer + 1] > dropped[layer]:  # x is kept out of h's type, as below
            inp = inputs[dropped[layer]:dropped[layer + 1]].reshape((n_rows, W.shape[0]))
            if layer == 0:
                apply_dropout(layers, layer, step, x, inp)
            else:
                apply_dropout(layers, layer, step, h, inp)
            dense_rows(inp, W, b, layers[layer]["activation"], layers[layer]["alpha"], z, y)
        elif layer == 0:
            dense_rows(x, W, b, layers[layer]["activation"], layers[layer]["alpha"], z, y)
        else:
            dense_rows(h, W, b, layers[layer]["activation"], layers[layer]["alpha"], z, y)
        h = y
    if outputs.size > 0:
        outputs[:, :] = h

    last = n_layers - 1
    logits = zs[starts[last]:].reshape((n_rows, layers[last]["fan_out"]))
    d_out = np.empty_like(logits)
    loss = loss_and_gradient(loss_id, logits, h, labels, targets, weights, d_out)
    folds_activation = loss_id == SPARSE_XENT or loss_id == CATEGORICAL_XENT or loss_id == BINARY_XENT

    if n_covered != params.size:  # gaps between layers get a zero gradient, as in the reference
        grads[:] = 0.0
    d_hidden = np.empty((2, n_rows * _widest(layers, last)), dtype=params.dtype)  # ping-pong dx
    dy = d_out
    for layer in range(last, -1, -1):
        W, b = layer_params(params, layers, layer)
        dW, db = layer_params(grads, layers, layer)
        fan_in, fan_out = W.shape
        z = zs[starts[layer]:starts[layer + 1]].reshape((n_rows, fan_out))
        y = ys[starts[layer]:starts[layer + 1]].reshape((n_rows, fan_out))
        act_id = IDENTITY if layer == last and folds_activation else layers[layer]["activation"]
        alpha = layers[layer]["alpha"]
        masked = dropped[layer + 1] > dropped[layer]
        x_layer = ys[:0].reshape((0, 0))
        if masked:  # dW from the input the forward used; the input's gradient through the mask
            x_layer = inputs[dropped[layer]:dropped[layer + 1]].reshape((n_rows, fan_in))
        elif layer > 0:
            x_layer = ys[starts[layer - 1]:starts[layer]].reshape((n_rows, fan_in))
        if layer == 0:
            if masked:
                dense_backward(dy, x_layer, W, z, y, act_id, alpha, dx, dW, db)
                if dx.size > 0:
                    apply_dropout(layers, layer, step, dx, dx)
            else:
                dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db)
        else:
            d_in = d_hidden[layer % 2, :n_rows * fan_in].reshape((n_rows, fan_in))
            dense_backward(dy, x_layer, W, z, y, act_id, alpha, d_in, dW, db)
            if masked:
                apply_dropout(layers, layer, step, d_in, d_in)
            dy = d_in
        l1 = penalty_scale * layers[layer]["l1"]
        l2 = penalty_scale * layers[layer]["l2"]
        if l1 != 0.0 or l2 != 0.0:  # W is read only by this layer's dx, computed above
            loss += add_kernel_penalty(W, dW, l1, l2)
    return loss


@kernel
def update_if_finite(loss, params, grads, opt_state, hyper):
    """The contract's transactional update: the optimizer step only for a finite loss, then
    hyper[H_APPLIED] = hyper[H_STEP] as its last act. Returns the loss."""
    if np.isfinite(loss):
        optimizer_update(params, grads, opt_state, hyper)
        hyper[abi.H_APPLIED] = hyper[abi.H_STEP]
    return loss


@kernel
def optimizer_update(params, grads, opt_state, hyper):
    """The optimizer that ``hyper`` describes (see fusedense.abi), over the whole flat buffer."""
    if hyper[abi.H_OPTIMIZER] == abi.OPT_SGD:
        sgd_step(params, grads, opt_state[0], hyper[abi.H_LR], hyper[abi.H_BETA1],
                 hyper[abi.H_NESTEROV] != 0.0, hyper[abi.H_WEIGHT_DECAY])
    elif hyper[abi.H_OPTIMIZER] == abi.OPT_RMSPROP:
        rmsprop_step(params, grads, opt_state[0], opt_state[1], hyper[abi.H_LR], hyper[abi.H_BETA2],
                     hyper[abi.H_BETA1], hyper[abi.H_EPS], hyper[abi.H_WEIGHT_DECAY])
    else:
        adam_step(params, grads, opt_state[0], opt_state[1], hyper[abi.H_STEP], hyper[abi.H_LR],
                  hyper[abi.H_BETA1], hyper[abi.H_BETA2], hyper[abi.H_EPS],
                  hyper[abi.H_WEIGHT_DECAY], hyper[abi.H_DECOUPLED] != 0.0)
