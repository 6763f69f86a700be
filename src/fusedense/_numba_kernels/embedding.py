"""A token embedding in front of a network (``fusedense.embedding``): the table (vocab_size ×
dim) is the front of the flat buffer, ``dim`` = the first layer's fan_in / context. Forward,
the fused training step and the whole batched sampling loop, each one call."""
import numpy as np

from .. import abi
from .jit import kernel
from .mlp import loss_and_gradients, mlp_forward, mlp_forward_workspace_size, update_if_finite


@kernel
def _table(params, vocab_size, dim):
    """The embedding table: a (vocab_size, dim) view of the front of ``params`` (or of grads)."""
    return params[:vocab_size * dim].reshape((vocab_size, dim))


@kernel
def gather(tokens, table, x):
    """x[i] = the table rows of tokens[i], side by side."""
    dim = table.shape[1]
    for i in range(tokens.shape[0]):
        for p in range(tokens.shape[1]):
            row = table[tokens[i, p]]
            for c in range(dim):
                x[i, p * dim + c] = row[c]


@kernel
def scatter_add(tokens, dx, table_grad):
    """table_grad[v] += the dx slices of every (row, position) holding token v, rows in order."""
    dim = table_grad.shape[1]
    for i in range(tokens.shape[0]):
        for p in range(tokens.shape[1]):
            row = table_grad[tokens[i, p]]
            for c in range(dim):
                row[c] += dx[i, p * dim + c]


@kernel
def embedding_forward(tokens, params, layers, vocab_size, out, workspace):
    """The network's output for token contexts: a gather into a scratch input, then every layer.
    Returns 0, or, computing nothing, the workspace size it needs (as mlp_forward)."""
    needed = mlp_forward_workspace_size(tokens.shape[0], layers, out.itemsize)
    if workspace.size < needed:
        return needed
    x = np.empty((tokens.shape[0], layers[0]["fan_in"]), params.dtype)
    gather(tokens, _table(params, vocab_size, x.shape[1] // tokens.shape[1]), x)
    mlp_forward(x, params, layers, out, workspace)
    return 0


@kernel
def embedding_train_step(tokens, labels, params, grads, opt_state, layers, loss_id, hyper, vocab_size,
                         outputs):
    """Gather, forward, softmax cross-entropy, backward down to dLoss/dx, scatter-add of dx into
    the table's gradient rows, optimizer update of the whole buffer (for a finite loss).
    Returns the loss. The
    outputs go to ``outputs`` unless it is empty."""
    n_rows, context = tokens.shape
    dim = layers[0]["fan_in"] // context
    x = np.empty((n_rows, context * dim), params.dtype)
    gather(tokens, _table(params, vocab_size, dim), x)
    dx = np.empty_like(x)
    loss = loss_and_gradients(x, labels, x[:0], params[:0], params, grads, layers, loss_id, dx, outputs,
                              hyper[abi.H_PENALTY_SCALE], np.int64(hyper[abi.H_STEP]))
    table_grad = _table(grads, vocab_size, dim)
    table_grad[:] = 0.0
    scatter_add(tokens, dx, table_grad)
    return update_if_finite(loss, params, grads, opt_state, hyper)


@kernel
def sample_row(logits, temperature, u, cdf):
    """``reference.sample_tokens`` for one row (float64 whatever the logits' dtype); ``cdf`` is
    scratch of the row's length."""
    n = logits.size
    best, top = 0, np.float64(logits[0])
    for j in range(1, n):
        if logits[j] > top:
            best, top = j, np.float64(logits[j])
    if temperature == 0.0:
        return best
    for j in range(n):
        cdf[j] = np.exp((np.float64(logits[j]) - top) / temperature)
    for j in range(1, n):  # the running sum in NumPy's order
        cdf[j] += cdf[j - 1]
    threshold = u * cdf[n - 1]
    for j in range(n):
        if not cdf[j] < threshold:
            return j
    return n - 1


@kernel
def embedding_generate(params, layers, vocab_size, context, uniforms, temperature, boundary, tokens,
                       lengths, workspace):
    """``reference.embedding_generate``: the running rows stay packed at the front of the
    context and logits arrays (a finished row is dropped by moving the later ones up), so each
    step's forward covers only them. Returns 0, or, computing nothing, the workspace size it
    needs (as mlp_forward)."""
    needed = mlp_forward_workspace_size(uniforms.shape[0], layers, params.itemsize)
    if workspace.size < needed:
        return needed
    n, max_len = uniforms.shape
    dim = layers[0]["fan_in"] // context
    table = _table(params, vocab_size, dim)
    rows = np.arange(n)  # the running rows' sequence numbers
    ctx = np.full((n, context), boundary, np.int64)
    x = np.empty((n, context * dim), params.dtype)
    logits = np.empty((n, layers[layers.size - 1]["fan_out"]), params.dtype)
    cdf = np.empty(logits.shape[1], np.float64)
    tokens[:] = boundary
    lengths[:] = max_len
    running = n
    for t in range(max_len):
        gather(ctx[:running], table, x[:running])
        mlp_forward(x[:running], params, layers, logits[:running], workspace)
        kept = 0
        for r in range(running):
            row = rows[r]
            token = sample_row(logits[r], temperature, uniforms[row, t], cdf)
            if token == boundary:
                lengths[row] = t
                continue
            tokens[row, t] = token
            rows[kept] = row
            for p in range(context - 1):  # kept <= r: row `kept` is done with, or is row r itself
                ctx[kept, p] = ctx[r, p + 1]
            ctx[kept, context - 1] = token
            kept += 1
        running = kept
        if running == 0:
            break
    return 0
