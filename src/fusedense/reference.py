"""The NumPy reference: readable, straight from the equations. Every test uses it as the oracle.

Speed does not matter here; clarity does. Functions take validated arrays and return new ones.
Shapes: x (B, n_in), W (n_in, n_out), b (n_out,), z = x @ W + b, y = act(z).
"""
from __future__ import annotations

import numpy as np

from . import abi
from .activations import BY_ID, activation_vjp, get_activation
from .layout import QUANT_INT8, layer_views, quantized_layer_views

_SIGMOID = get_activation("sigmoid")  # the registry's overflow-free form

# --- one dense layer ----------------------------------------------------------------------


def dense_forward(x, W, b, act, alpha):
    """Returns (y, z) with z = x @ W + b and y = act(z)."""
    z = x @ W + b
    return act.forward(z, alpha), z


def dense_backward(dy, x, W, z, y, act, alpha, need_dx=True):
    """Returns (dx, dW, db): dz = dy · act'(z), dW = xᵀ dz, db = Σ_rows dz, dx = dz Wᵀ."""
    dz = activation_vjp(act, dy, z, y, alpha)
    dW = x.T @ dz
    db = dz.sum(axis=0)
    dx = dz @ W.T if need_dx else None
    return dx, dW, db


# --- losses: each returns (mean loss, gradient w.r.t. its first argument) ------------------


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _row_weights(sample_weight, n_rows):
    """Each row's weight as a column (B, 1): ones when there are none."""
    return np.ones((n_rows, 1)) if sample_weight is None else np.asarray(sample_weight, np.float64)[:, None]


def softmax_cross_entropy(logits, labels, sample_weight=None):
    """Integer labels. loss = mean_i w_i · −log softmax(logits_i)[labels_i];
    grad = w_i (softmax − onehot)/B (w_i = 1 without sample weights)."""
    B = logits.shape[0]
    w = _row_weights(sample_weight, B)
    logp = _log_softmax(logits)
    rows = np.arange(B)
    loss = -(w[:, 0] * logp[rows, labels]).mean()
    grad = np.exp(logp)
    grad[rows, labels] -= 1
    return loss, w * grad / B


def softmax_cross_entropy_probs(logits, targets, sample_weight=None):
    """Probability targets. loss = mean_i w_i · −Σ_j t_ij log softmax_ij;
    grad = w_i (softmax·Σ_j t_ij − t)/B."""
    B = logits.shape[0]
    w = _row_weights(sample_weight, B)
    logp = _log_softmax(logits)
    loss = -(w[:, 0] * (targets * logp).sum(axis=1)).mean()
    grad = np.exp(logp) * targets.sum(axis=1, keepdims=True) - targets
    return loss, w * grad / B


def binary_cross_entropy_with_logits(logits, targets, sample_weight=None):
    """Element-wise sigmoid cross-entropy, mean over all elements of w_i · ℓ_ij;
    grad = w_i (σ(z) − t)/size."""
    w = _row_weights(sample_weight, logits.shape[0]) if logits.ndim == 2 else 1.0
    # log(1 + e^z) − z·t, written so that exp never overflows
    per_element = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    return (w * per_element).mean(), w * (_SIGMOID.forward(logits, 0.0) - targets) / logits.size


def mean_squared_error(y, targets, sample_weight=None):
    """loss = mean of w_i (y − t)² over all elements; grad = 2 w_i (y − t)/size."""
    w = _row_weights(sample_weight, y.shape[0]) if y.ndim == 2 else 1.0
    diff = y - targets
    return (w * diff * diff).mean(), 2 * w * diff / y.size


def loss_and_gradient(loss_id, outputs, targets, sample_weight=None):
    """The loss ``loss_id`` (abi.LOSS_*) and its gradient w.r.t. ``outputs`` (logits for the
    cross-entropies, predictions for MSE); ``sample_weight`` (B,) scales each row's loss and
    gradient, the mean still over B rows (the caller normalises the weights)."""
    losses = {abi.LOSS_SPARSE_XENT: softmax_cross_entropy,
              abi.LOSS_CATEGORICAL_XENT: softmax_cross_entropy_probs,
              abi.LOSS_BINARY_XENT: binary_cross_entropy_with_logits,
              abi.LOSS_MSE: mean_squared_error}
    return losses[loss_id](outputs, targets, sample_weight)


# --- optimizers: update params (and state) in place ---------------------------------------


def sgd_step(params, grads, velocity, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """PyTorch's SGD: g += wd·p; v = μ v + g; p −= lr · (g + μ v if nesterov else v)."""
    g = grads + weight_decay * params
    if momentum == 0:
        params -= lr * g
        return
    velocity *= momentum
    velocity += g
    params -= lr * (g + momentum * velocity if nesterov else velocity)


def adam_step(params, grads, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled=False):
    """Adam (decoupled=False: L2 added to the gradient) or AdamW (decoupled=True), step ≥ 1.

    m = β1 m + (1−β1) g;  v = β2 v + (1−β2) g²;  p −= lr · m̂ / (√v̂ + ε),
    m̂ = m / (1 − β1^step),  v̂ = v / (1 − β2^step).  AdamW first does p −= lr·wd·p.
    """
    if decoupled:
        params -= lr * weight_decay * params
        g = grads
    else:
        g = grads + weight_decay * params
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    params -= lr * m_hat / (np.sqrt(v_hat) + eps)


def rmsprop_step(params, grads, v, b, lr, rho=0.9, momentum=0.0, eps=1e-7, weight_decay=0.0):
    """Keras's RMSprop: p −= lr·wd·p (decoupled), v = ρ v + (1−ρ) g², s = lr·g / √(v + ε);
    with momentum μ: b = μ b + s, p −= b; without: p −= s."""
    params -= lr * weight_decay * params
    v *= rho
    v += (1 - rho) * grads * grads
    step = lr * grads / np.sqrt(v + eps)
    if momentum:
        b *= momentum
        b += step
        step = b
    params -= step


# --- dropout: the mask every engine draws inside its training step ------------------------
# A counter-based generator: whether element (row, column) of layer ``layer``'s input is kept at
# training step ``step`` is a pure function of (seed, step, layer, row, column), so every engine
# (and every thread, whatever rows it takes) draws the same mask without sharing a state.
# 64-bit unsigned integers, wrapping; i = row · n_columns + column:
#   mix64(z)   = SplitMix64's finalizer: z ^= z >> 30; z *= C1; z ^= z >> 27; z *= C2; z ^= z >> 31
#   key        = mix64(mix64(mix64(seed ^ GOLDEN) ^ step) ^ layer)        (once per layer and step)
#   u(g)       = mix64(key + (g + 1) · GOLDEN)         (SplitMix64's g-th output: 4 elements each)
#   dropped    ⇔ bits 16·(i mod 4) … +15 of u(i div 4) < floor(rate · 2^16)
# Four 16-bit uniforms per hash: the hash is what dropout costs (one per element took 35% of the
# language model's step), and 2^-16 is a fine enough rate. A kept element is scaled by
# 1/(1 − rate) (inverted dropout: the identity at inference keeps the expected activation); the
# backward multiplies the input's gradient by the same mask and scale.

GOLDEN = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_U64 = np.uint64


def _mix64(z):
    """SplitMix64's finalizer on uint64 arrays (wrapping arithmetic)."""
    z = z ^ (z >> _U64(30))
    z = z * _U64(MIX1)
    z = z ^ (z >> _U64(27))
    z = z * _U64(MIX2)
    return z ^ (z >> _U64(31))


def dropout_keep(seed, step, layer, n_rows, n_cols, rate):
    """The (n_rows, n_cols) bool mask of the elements kept (see the definition above)."""
    i = np.arange(n_rows * n_cols, dtype=_U64)
    with np.errstate(over="ignore"):
        key = _mix64(_mix64(_mix64(np.array([seed], _U64) ^ _U64(GOLDEN)) ^ _U64(step)) ^ _U64(layer))
        u = _mix64(key + ((i >> _U64(2)) + _U64(1)) * _U64(GOLDEN))
    bits = (u >> (_U64(16) * (i & _U64(3)))) & _U64(0xFFFF)
    return (bits >= _U64(int(rate * 65536.0))).reshape(n_rows, n_cols)  # int() floors a positive number


def dropout_scale(layer, n_rows, step, layer_index, dtype):
    """mask · 1/(1 − rate) in ``dtype`` for the input of record entry ``layer`` (None: no dropout
    at this step: rate 0, or step 0 = not a training step)."""
    rate = float(layer["dropout"])
    if rate == 0 or step == 0:
        return None
    keep = dropout_keep(int(layer["seed"]), step, layer_index, n_rows, int(layer["fan_in"]), rate)
    return keep * np.array(1.0 / (1.0 - rate), dtype)


# --- whole network over a flat parameter buffer -------------------------------------------


def mlp_forward(x, params, layers, keep=False, step=0):
    """Runs every layer of the record ``layers`` (fusedense.layout.LAYER). Returns the output,
    or (output, [(z, y, layer input) per layer]) when keep=True. ``step`` ≥ 1: a training
    step's forward, each layer's input multiplied by its dropout mask and scale (0: none)."""
    cache = []
    h = x
    for l, ((W, b), layer) in enumerate(zip(layer_views(params, layers), layers)):
        scale = dropout_scale(layer, len(x), step, l, params.dtype)
        inp = h if scale is None else h * scale
        h, z = dense_forward(inp, W, b, BY_ID[layer["activation"]], layer["alpha"])
        cache.append((z, h, inp))
    return (h, cache) if keep else h


def mlp_backward(d_out, x, params, layers, cache, d_last_z=None, need_dx=False, step=0):
    """Gradient of the loss w.r.t. the flat buffer, given dLoss/d(output) (or d_last_z, the
    gradient w.r.t. the last layer's pre-activation, when a fused loss supplies it).
    need_dx: returns (grads, dLoss/dx) — what an embedding in front of the network needs.
    ``step``: the forward's (each layer's input gradient goes through its dropout mask)."""
    grads = np.zeros_like(params)
    views = layer_views(params, layers)
    grad_views = layer_views(grads, layers)
    dy = d_out
    for l in reversed(range(len(layers))):
        W, _ = views[l]
        z, y, inp = cache[l]
        act = BY_ID[layers[l]["activation"]]
        if l == len(layers) - 1 and d_last_z is not None:
            act, dy = BY_ID[0], d_last_z  # the loss already folded in the last activation
        dx, dW, db = dense_backward(dy, inp, W, z, y, act, layers[l]["alpha"], need_dx=l > 0 or need_dx)
        scale = dropout_scale(layers[l], len(x), step, l, params.dtype)
        if dx is not None and scale is not None:
            dx = dx * scale  # d(h·mask·s)/dh = mask·s
        grad_views[l][0][...] = dW
        grad_views[l][1][...] = db
        dy = dx
    return (grads, dy) if need_dx else grads


def kernel_penalty(params, layers, scale=1.0):
    """The record's kernel penalties: (value, gradient) of scale·Σ_l (l1_l·Σ|W_l| + l2_l·ΣW_l²),
    the value summed in float64; the gradient scale·(l1·sign(W) + 2·l2·W) at each W, zero at
    the biases (Keras's regularizers and scikit-learn's alpha penalise kernels only)."""
    value, grads = 0.0, np.zeros_like(params)
    for (W, _), (dW, _), layer in zip(layer_views(params, layers), layer_views(grads, layers), layers):
        l1, l2 = scale * layer["l1"], scale * layer["l2"]
        value += l1 * float(np.abs(W).sum(dtype=np.float64)) + l2 * float(np.square(W, dtype=np.float64).sum())
        dW[...] = l1 * np.sign(W) + 2 * l2 * W
    return value, grads


def mlp_loss_and_grad(x, targets, params, layers, loss_id, need_dx=False, sample_weight=None, penalty_scale=1.0,
                      step=0):
    """Forward, loss and backward: (loss, grads), or (loss, (grads, dx)) with need_dx (as
    mlp_backward). Cross-entropy losses read the last layer's pre-activation (the logits), so
    the last activation (softmax/sigmoid/identity) is folded into the loss. The loss and grads
    include the record's kernel penalties times ``penalty_scale`` (kernel_penalty). ``step`` ≥ 1
    applies the layers' dropout masks of that training step (0: none, as mlp_gradient)."""
    out, cache = mlp_forward(x, params, layers, keep=True, step=step)
    if loss_id == abi.LOSS_MSE:
        loss, dy = loss_and_gradient(loss_id, out, targets, sample_weight)
        result = mlp_backward(dy, x, params, layers, cache, need_dx=need_dx, step=step)
    else:
        loss, dz = loss_and_gradient(loss_id, cache[-1][0], targets, sample_weight)  # the logits
        result = mlp_backward(None, x, params, layers, cache, d_last_z=dz, need_dx=need_dx, step=step)
    penalty, penalty_grads = kernel_penalty(params, layers, penalty_scale)
    (result[0] if need_dx else result)[...] += penalty_grads
    return loss + penalty, result


def optimizer_step(params, grads, opt_state, hyper):
    """Applies the optimizer that ``hyper`` (see abi.H_*) describes to the flat buffer."""
    if hyper[abi.H_OPTIMIZER] == abi.OPT_SGD:
        sgd_step(params, grads, opt_state[0], hyper[abi.H_LR], hyper[abi.H_BETA1],
                 bool(hyper[abi.H_NESTEROV]), hyper[abi.H_WEIGHT_DECAY])
    elif hyper[abi.H_OPTIMIZER] == abi.OPT_RMSPROP:
        rmsprop_step(params, grads, opt_state[0], opt_state[1], hyper[abi.H_LR], hyper[abi.H_BETA2],
                     hyper[abi.H_BETA1], hyper[abi.H_EPS], hyper[abi.H_WEIGHT_DECAY])
    else:
        adam_step(params, grads, opt_state[0], opt_state[1], hyper[abi.H_STEP], hyper[abi.H_LR],
                  hyper[abi.H_BETA1], hyper[abi.H_BETA2], hyper[abi.H_EPS],
                  hyper[abi.H_WEIGHT_DECAY], bool(hyper[abi.H_DECOUPLED]))


def mlp_train_step(x, targets, params, layers, opt_state, loss_id, hyper, sample_weight=None):
    """One minibatch: forward (with the dropout masks of step hyper[H_STEP]), loss (with the
    kernel penalties times hyper[H_PENALTY_SCALE]), backward, optimizer update (in place).
    Returns (loss, grads)."""
    loss, grads = mlp_loss_and_grad(x, targets, params, layers, loss_id, sample_weight=sample_weight,
                                    penalty_scale=hyper[abi.H_PENALTY_SCALE], step=int(hyper[abi.H_STEP]))
    optimizer_step(params, grads, opt_state, hyper)
    return loss, grads


# --- a token embedding in front of the network (fusedense.embedding) ---------------------------
# tokens (B, context) int64; the table E (vocab_size × dim, dim = fan_in of the first layer /
# context) is the front of the flat buffer, params[:vocab_size·dim].


def embed(tokens, params, layers, vocab_size):
    """The first layer's input: the table rows of each row's tokens, side by side (B, context·dim)."""
    dim = layers[0]["fan_in"] // tokens.shape[1]
    return params[:vocab_size * dim].reshape(vocab_size, dim)[tokens].reshape(len(tokens), -1)


def embedding_forward(tokens, params, layers, vocab_size):
    """The network's output for token contexts: a gather, then every layer."""
    return mlp_forward(embed(tokens, params, layers, vocab_size), params, layers)


def embedding_loss_and_grad(tokens, labels, params, layers, vocab_size, penalty_scale=1.0, step=0):
    """The softmax cross-entropy (over the last pre-activation) of a minibatch and its gradient
    w.r.t. the whole buffer: backward down to dLoss/dx, then dE[v] = Σ of dx over the
    (row, position)s holding token v (a scatter-add). ``step``: as mlp_loss_and_grad's.
    Returns (loss, grads)."""
    x = embed(tokens, params, layers, vocab_size)
    loss, (grads, dx) = mlp_loss_and_grad(x, labels, params, layers, abi.LOSS_SPARSE_XENT, need_dx=True,
                                          penalty_scale=penalty_scale, step=step)
    dim = x.shape[1] // tokens.shape[1]
    np.add.at(grads[:vocab_size * dim].reshape(vocab_size, dim), tokens.ravel(), dx.reshape(-1, dim))
    return loss, grads


def embedding_train_step(tokens, labels, params, layers, opt_state, hyper, vocab_size):
    """One minibatch: embedding_loss_and_grad, then the optimizer update of the whole buffer
    (in place). Returns (loss, grads)."""
    loss, grads = embedding_loss_and_grad(tokens, labels, params, layers, vocab_size, hyper[abi.H_PENALTY_SCALE],
                                          int(hyper[abi.H_STEP]))
    optimizer_step(params, grads, opt_state, hyper)
    return loss, grads


def sample_tokens(logits, temperature, uniforms):
    """One token per row by inverse CDF: the first j with cdf_j ≥ u·cdf_last, where cdf is the
    running sum of exp((logits − max) / temperature) — in float64 whatever the logits' dtype —
    and u the row's uniform in [0, 1). Temperature 0: the first most likely token."""
    logits = logits.astype(np.float64)
    if temperature == 0:
        return logits.argmax(axis=1)
    cdf = np.cumsum(np.exp((logits - logits.max(axis=1, keepdims=True)) / temperature), axis=1)
    below = (cdf < uniforms[:, None] * cdf[:, -1:]).sum(axis=1)
    return np.minimum(below, logits.shape[1] - 1)


def embedding_generate(params, layers, vocab_size, context, uniforms, temperature, boundary):
    """Batched autoregressive sampling from the network (its output read as logits); see
    :func:`generate_with`. Returns (tokens (n, max_len) int64 padded with boundary, lengths (n,))."""
    def next_logits(ctx):
        return embedding_forward(ctx, params, layers, vocab_size)
    return generate_with(next_logits, context, uniforms, temperature, boundary)


def generate_with(next_logits, context, uniforms, temperature, boundary):
    """The sampling loop around any model: ``next_logits(ctx (m, context) int64)`` gives the
    (m, vocab) logits of the rows still running. Every row starts from a context of
    ``boundary`` tokens; at step t a running row samples with uniforms[row, t]
    (:func:`sample_tokens`) and stops after sampling ``boundary`` (not kept) or after
    max_len = uniforms.shape[1] tokens. Returns (tokens (n, max_len) int64 padded with
    boundary, lengths (n,) int64)."""
    n, max_len = uniforms.shape
    tokens = np.full((n, max_len), boundary, np.int64)
    lengths = np.full(n, max_len, np.int64)
    rows = np.arange(n)  # the rows still running
    ctx = np.full((n, context), boundary, np.int64)
    for t in range(max_len):
        sampled = sample_tokens(next_logits(ctx), temperature, uniforms[rows, t])
        ended = sampled == boundary
        lengths[rows[ended]] = t
        tokens[rows[~ended], t] = sampled[~ended]
        rows, ctx = rows[~ended], np.concatenate([ctx[~ended, 1:], sampled[~ended, None]], axis=1)
        if not len(rows):
            break
    return tokens, lengths


# --- quantized networks (fusedense.quantized; the buffer and record: fusedense.layout) -----------
# The quantization of activations is defined in float32 operations, written here exactly as the
# kernels do them (IEEE float32 division and product, then round half to even), so that every
# engine finds the same integers; the products are then taken in float64 from the dequantized
# values.

INT8_MAX = np.float32(127)


def bf16_round(a):
    """float32 ``a`` rounded to bfloat16, round to nearest even, as uint16 bit patterns (NaN
    stays a quiet NaN, ±inf stays ±inf, values past bf16's largest round to ±inf)."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(a, np.float32))
    return np.where(nan, (bits >> 16) | 0x40, rounded).astype(np.uint16)


def bf16_to_float(bits):
    """bfloat16 bit patterns (uint16) as float32 values (exact)."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def quantize_rows_int8(x, x_amax=0.0):
    """Symmetric int8 codes of float32 rows: (q (B, k) int64 in [-127, 127], scale (B,) float32)
    with x ≈ q · scale. amax = max |x_row| (dynamic), or ``x_amax`` when > 0 (calibrated: values
    past it clip to ±127); q = rint(x · (127 / amax)), scale = amax / 127. A row of zeros has
    q = 0, scale 0; a row holding NaN or ±inf has q = 0 and scale NaN (its outputs are NaN)."""
    x = np.asarray(x, np.float32)
    finite = np.isfinite(x).all(axis=1)
    amax = np.abs(x).max(axis=1) if x_amax == 0 else np.full(len(x), np.float32(x_amax))
    amax = np.where(finite, amax, np.float32(1)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, INT8_MAX / amax, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(np.where(finite[:, None], x, 0) * inv[:, None]), -127, 127).astype(np.int64)
    scale = np.where(finite, amax / INT8_MAX, np.float32(np.nan)).astype(np.float32)
    return q, scale


def quantized_dense_forward(x, qbuffer, qlayers, layer):
    """Layer ``layer`` of a quantized network over float32 rows ``x``: returns (y float64,
    acc) where, for int8, acc = q_x @ q_W (int64, the exact integer sums every engine's int32
    accumulators must equal) and y = act((q_x·s_x) @ (q_W·s_W) + b); for bf16 (acc None),
    y = act(bf16(x) @ W + b) with both operands' bf16 values widened to float64."""
    W, scales, bias, _ = quantized_layer_views(qbuffer, qlayers[layer:layer + 1])[0]  # that layer only
    record = qlayers[layer]
    act, alpha = BY_ID[record["activation"]], record["alpha"]
    if record["kind"] == QUANT_INT8:
        q, row_scale = quantize_rows_int8(x, record["x_amax"])
        acc = q @ W.astype(np.int64)
        x_dequantized = q * row_scale.astype(np.float64)[:, None]
        with np.errstate(invalid="ignore"):  # NaN scales of non-finite rows: NaN outputs
            z = x_dequantized @ (W * scales.astype(np.float64)) + bias
        return act.forward(z, alpha), acc
    x_bf16 = bf16_to_float(bf16_round(x)).astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN/inf inputs: NaN outputs, as NumPy's product gives
        z = x_bf16 @ bf16_to_float(W).astype(np.float64) + bias
    return act.forward(z, alpha), None


def quantized_mlp_forward(x, qbuffer, qlayers):
    """Every layer of a quantized network; each layer's input is the previous layer's output
    rounded to float32 (what the kernels pass on), quantized again."""
    h = np.asarray(x, np.float32)
    for layer in range(len(qlayers)):
        h = quantized_dense_forward(h, qbuffer, qlayers, layer)[0].astype(np.float32)
    return h


def quantized_embedding_generate(embeddings, qbuffer, qlayers, context, uniforms, temperature, boundary):
    """:func:`embedding_generate` over a quantized network: each step gathers the float32 table
    rows of the contexts, then :func:`quantized_mlp_forward` (its output read as logits)."""
    def next_logits(ctx):
        return quantized_mlp_forward(embeddings[ctx].reshape(len(ctx), -1), qbuffer, qlayers)
    return generate_with(next_logits, context, uniforms, temperature, boundary)


# --- a sparse (CSR) input in front of the network: the first layer is a gather-sum ---------------
# X is given as CSR arrays: indptr (B+1,), indices (nnz,) column ids, values (nnz,). The first
# layer's W0 (n_features × n) is read only at the rows X touches; its gradient is formed only
# there (``rows``, the sorted distinct indices), never as a dense n_features × n array.


def csr(indptr, indices, values, n_features):
    """The SciPy CSR matrix over the three arrays (duplicates and unsorted indices kept as given:
    SciPy's products add duplicates up, as the gather-sum does)."""
    import scipy.sparse

    return scipy.sparse.csr_matrix((values, indices, indptr), shape=(len(indptr) - 1, n_features))


def sparse_dense_forward(indptr, indices, values, W, b, act, alpha):
    """Returns (y, z), z = X @ W + b with SciPy's sparse product, y = act(z)."""
    z = csr(indptr, indices, values, W.shape[0]) @ W + b
    return act.forward(z, alpha), z


def sparse_mlp_forward(indptr, indices, values, params, layers):
    """The network's output for CSR rows: layers[0] by sparse_dense_forward, the rest by mlp_forward."""
    first = layers[0]
    h, _ = sparse_dense_forward(indptr, indices, values, *layer_views(params, layers[:1])[0],
                                BY_ID[first["activation"]], first["alpha"])
    return h if len(layers) == 1 else mlp_forward(h, params, layers[1:])


def table_values(table):
    """A quantized table's values in float64: int8 codes as they are, bf16 bit patterns
    (uint16) widened (their scales are applied apart, per column)."""
    return table.astype(np.float64) if table.dtype == np.int8 else bf16_to_float(table).astype(np.float64)


def quantized_sparse_forward(indptr, indices, values, table, scales, b, act, alpha):
    """y = act((X @ T) · scales + b) in float64 for the CSR X and a quantized table T (int8
    codes or bf16 bit patterns, fan_in × n) with its per-column scales: the sparse first layer
    of a quantized network, W ≈ T · scales. Only the rows X names are widened (the table may
    have millions of rows)."""
    rows, slots = np.unique(indices, return_inverse=True)
    used = table_values(table[rows]) * scales.astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN/inf values propagate as NumPy's product gives them
        z = csr(indptr, slots.reshape(-1), values.astype(np.float64), len(rows)) @ used + b
    return act.forward(z, alpha)


def sparse_dense_backward(dy, indptr, indices, values, z, y, act, alpha, rows):
    """Returns (dW_rows, db): dz = dy · act'(z); dW_rows[r] = (Xᵀ dz)[rows[r]], summed over the
    non-zeros in column rows[r] (an explicit scatter-add); db = Σ_rows dz."""
    dz = activation_vjp(act, dy, z, y, alpha)
    row_of = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    dW_rows = np.zeros((len(rows), dz.shape[1]), dz.dtype)
    np.add.at(dW_rows, np.searchsorted(rows, indices), values[:, None] * dz[row_of])
    return dW_rows, dz.sum(axis=0)


def adagrad_step(params, grads, accum, lr, eps=1e-10, weight_decay=0.0):
    """PyTorch's Adagrad (no lr decay): g += wd·p; G += g²; p −= lr · g / (√G + eps)."""
    g = grads + weight_decay * params
    accum += g * g
    params -= lr * g / (np.sqrt(accum) + eps)


def _optimizer_on(params, grads, state, hyper):
    """The optimizer of ``hyper`` on arrays (views or copies); state: a list of arrays like params."""
    kind = hyper[abi.H_OPTIMIZER]
    if kind == abi.OPT_ADAGRAD:
        adagrad_step(params, grads, state[0], hyper[abi.H_LR], hyper[abi.H_EPS], hyper[abi.H_WEIGHT_DECAY])
    else:
        optimizer_step(params, grads, state, hyper)


def sparse_loss_and_grad(indptr, indices, values, targets, params, layers, loss_id, sample_weight=None,
                         penalty_scale=1.0):
    """Forward (the first layer sparse), loss and backward. Returns (loss, grads, rows,
    dW_rows): grads has the gradient of b0 and of every later layer (zero elsewhere), rows the
    sorted distinct indices of X and dW_rows W0's gradient there."""
    (W0, b0), = layer_views(params, layers[:1])
    first = layers[0]
    act0 = BY_ID[first["activation"]]
    h, z = sparse_dense_forward(indptr, indices, values, W0, b0, act0, first["alpha"])
    loss, (grads, dh) = mlp_loss_and_grad(h, targets, params, layers[1:], loss_id, need_dx=True,
                                          sample_weight=sample_weight, penalty_scale=penalty_scale)
    rows = np.unique(indices)
    dW_rows, db0 = sparse_dense_backward(dh, indptr, indices, values, z, h, act0, first["alpha"], rows)
    layer_views(grads, layers[:1])[0][1][...] = db0
    return loss, grads, rows, dW_rows


def sparse_train_step(indptr, indices, values, targets, params, layers, opt_state, loss_id, hyper,
                      sample_weight=None):
    """One minibatch with the lazy first-layer update (see interface.sparse_train_step), in
    place for a finite loss. Returns (loss, grads, rows, dW_rows)."""
    loss, grads, rows, dW_rows = sparse_loss_and_grad(indptr, indices, values, targets, params, layers, loss_id,
                                                      sample_weight, hyper[abi.H_PENALTY_SCALE])
    if not np.isfinite(loss):
        return loss, grads, rows, dW_rows
    spans = [(int(l["offset"]), int(l["offset"] + (l["fan_in"] + 1) * l["fan_out"])) for l in layers[1:]]
    first = layers[0]
    w_end = int(first["offset"] + first["fan_in"] * first["fan_out"])
    spans.append((w_end, w_end + int(first["fan_out"])))  # b0
    for start, stop in spans:
        _optimizer_on(params[start:stop], grads[start:stop], [s[start:stop] for s in opt_state], hyper)
    n = int(first["fan_out"])
    table = params[first["offset"]:w_end].reshape(-1, n)
    states = [s[first["offset"]:w_end].reshape(-1, n) for s in opt_state]
    touched, touched_states = table[rows], [s[rows] for s in states]  # copies, written back below
    _optimizer_on(touched, dW_rows, touched_states, hyper)
    table[rows] = touched
    for s, t in zip(states, touched_states):
        s[rows] = t
    return loss, grads, rows, dW_rows
