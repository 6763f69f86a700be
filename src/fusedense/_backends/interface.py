"""The engine contract: the functions every engine module defines, with these exact parameters.

Engines (``numpy_backend``, ``numba_backend``, ``cython_backend``) receive only arguments that
:mod:`fusedense.gate` has checked, and never check them again:

- arrays are C-contiguous, of one float dtype (float32 or float64) per call, non-empty, of the
  shapes stated below; outputs are preallocated, writeable and do not overlap inputs (the
  gate tests the training buffers; forward outputs are the fronts' own, see gate.py);
- ``act_id`` is a valid activation id, ``alpha`` a finite float ≥ 0;
- ``layers`` is a read-only record from :func:`fusedense.layout.layer_record` whose every layer
  lies inside ``params`` (so no index arithmetic on it can overflow or leave the buffer); its
  ``l1``, ``l2`` (finite, >= 0) are each layer's kernel penalty: the training functions add
  ``s·(l1·Σ|W| + l2·ΣW²)`` to the loss (W before any update) and ``s·(l1·sign(W) + 2·l2·W)`` to dW,
  never to the bias, with ``s = hyper[H_PENALTY_SCALE]`` (finite, >= 0; 1 for mlp_gradient);
- ``qlayers`` is a read-only record from :func:`fusedense.gate.checked_quantized_record` whose
  every region lies inside ``qbuffer`` (uint8, C-contiguous); x/y/out of the quantized
  functions are float32;
- labels and token ids are int64 and inside their range; ``opt_state`` has the optimizer's rows
  (1 for SGD, 2 for Adam) of ``params.size``; ``hyper`` is float64 of length ``abi.N_HYPER``.

A test (tests/test_engine_contract.py) checks that every engine defines exactly these names
with exactly these parameters, so a new op cannot be added to one engine and forgotten in another.
"""
# The stubs below are the specification; engines implement them. They are never called.
# flake8: noqa: E704


def activation_forward(z, act_id, alpha, y):
    """y = act(z) for 2-D z; row-wise activations (softmax, log_softmax) over each row."""


def activation_backward(dy, z, y, act_id, alpha, dz):
    """dz = dy · act'(z); z or y may be None when the activation's derivative follows from the other."""


def dense_forward(x, W, b, act_id, alpha, y, z):
    """z = x @ W + b (z may be None: not kept), y = act(z). x (B, k), W (k, n), b (n,), y/z (B, n)."""


def dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db):
    """dz = dy · act'(z), dW = xᵀ dz, db = Σ_rows dz, dx = dz Wᵀ (dx None: skipped)."""


def mlp_forward(x, params, layers, out):
    """Every layer of ``layers`` over ``x`` (B, layers[0].fan_in) into ``out`` (B, layers[-1].fan_out)."""


def loss(loss_id, outputs, targets, grad):
    """Mean loss of ``outputs`` (B, C) against ``targets`` and, unless ``grad`` is None, its
    gradient with respect to ``outputs`` into ``grad`` (B, C). Returns the loss as a float.

    abi.LOSS_SPARSE_XENT      outputs are logits, targets int64 labels (B,); mean over rows;
                              grad = (softmax − onehot)/B
    abi.LOSS_CATEGORICAL_XENT outputs are logits, targets (B, C) probabilities; mean over rows;
                              grad = (softmax·Σ_j t_j − t)/B (softmax − t when targets sum to 1)
    abi.LOSS_BINARY_XENT      outputs are logits, targets (B, C); mean over all elements;
                              grad = (σ(outputs) − t)/(B·C)
    abi.LOSS_MSE              outputs are predictions, targets (B, C); mean over all elements;
                              grad = 2 (outputs − t)/(B·C)
    """


def sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """PyTorch's SGD in place on flat buffers (velocity read only when momentum > 0)."""


def adam_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """Adam / AdamW in place on flat buffers; step ≥ 1 for the bias correction."""


def mlp_gradient(x, targets, params, grads, layers, loss_id, sample_weight):
    """Forward, loss ``loss_id`` (with the record's kernel penalties as they are) and backward
    into ``grads`` (every element written), no update: one call; returns the loss. For full-batch optimizers (L-BFGS) and data-parallel training.
    ``sample_weight``: None, or (B,) in params' dtype, finite and >= 0: each row's loss and
    gradient are scaled by its weight, the mean still taken over B rows (callers wanting a
    weighted average pass weights that sum to B)."""


def mlp_train_step(x, targets, params, grads, opt_state, layers, loss_id, hyper, outputs, sample_weight):
    """Forward, loss ``loss_id`` on the last layer (plus the kernel penalties times
    hyper[H_PENALTY_SCALE]), backward into ``grads``, optimizer (``hyper``) update of ``params``
    and ``opt_state``: one call; returns the loss before the update.
    Transactional: when the loss is not finite (NaN/inf in the batch, or divergence), ``params``
    and ``opt_state`` are left untouched (``grads`` may hold anything) and the loss is returned;
    when the update is applied, its last act is ``hyper[H_APPLIED] = hyper[H_STEP]`` (so a step
    count read from there always matches the parameters, whatever interrupts the caller).
    ``targets``: int64 labels (B,) for LOSS_SPARSE_XENT, else (B, n_out) in params' dtype.
    ``outputs``: None, or (B, n_out): receives the step's own forward outputs (before the update).
    ``sample_weight``: as for mlp_gradient."""


def mlp_train_epoch(x, targets, order, batch_size, params, grads, opt_state, layers, loss_id, hyper, sample_weight,
                    batch_losses, outputs, penalty_over_weight, epsilon_on_sqrt_v):
    """One pass of mlp_train_step over the rows of ``x`` (n, fan_in) / ``targets`` (n,) or
    (n, n_out) in minibatches of ``batch_size`` rows (the last may be smaller), without
    returning to the caller between them: an epoch of scikit-learn's or Keras's loop in one call.
    ``order``: None (the rows in stored order) or int64 (m,) row indices in [0, n), the order
    to visit them in (a permutation for a shuffled epoch); batch i holds order[i·B:(i+1)·B].
    Each batch is one step as mlp_train_step: H_STEP = H_APPLIED + 1 (written to ``hyper``),
    transactional, H_APPLIED written after each applied update.
    ``sample_weight``: None or (n,) in params' dtype, finite and >= 0: each batch's loss is its
    rows' weighted average (the weights rescaled to sum to the batch's rows; all zero if they
    sum to 0).
    ``penalty_over_weight``: the kernel penalties of each batch are scaled by
    hyper[H_PENALTY_SCALE] divided by the batch's weight sum (its row count without weights):
    scikit-learn's alpha·W/n; else by hyper[H_PENALTY_SCALE] (Keras's). hyper[H_PENALTY_SCALE]
    is as given when the call returns.
    ``epsilon_on_sqrt_v``: Adam's ε is added to √v (scikit-learn's placement): each step uses
    ε' = hyper[H_EPS]/√(1−β2^t) on √v̂ (hyper[H_EPS] itself is not changed).
    ``batch_losses``: float64 (number of batches,), receives each batch's loss (before its
    update); from the first loss that is not finite on the epoch stops (that batch not
    applied) and the rest are NaN. ``outputs``: None, or (m, n_out) of params' dtype that
    receives each batch's outputs before its update, row i for the i-th row visited (Keras's
    training metrics). Returns the rows' mean of the batch losses (each times its rows, over m),
    or that first non-finite loss."""


def embedding_forward(tokens, params, layers, vocab_size, out):
    """Gather the embedding rows of ``tokens`` (B, context) from ``params[:vocab_size·dim]``, then
    every layer (dim = layers[0].fan_in / context)."""


def embedding_train_step(tokens, labels, params, grads, opt_state, layers, hyper, vocab_size, outputs):
    """As mlp_train_step with sparse cross-entropy, the input gradient scatter-added into the
    table's rows of ``grads`` before the optimizer pass; returns the loss. Transactional and
    writes ``hyper[H_APPLIED]`` as mlp_train_step."""


def embedding_generate(params, layers, vocab_size, context, uniforms, temperature, boundary, tokens, lengths):
    """The whole batched sampling loop: ``uniforms`` float64 (n, max_len) drawn by the caller,
    the network's output read as logits; writes ``tokens`` (n, max_len) int64 padded with
    ``boundary`` and ``lengths`` (n,) int64 (see reference.embedding_generate)."""


def quantized_dense_forward(x, qbuffer, qlayers, layer, y, acc):
    """Layer ``layer`` of the quantized record ``qlayers`` (fusedense.layout.QLAYER, over the byte
    buffer ``qbuffer``) on float32 ``x`` (B, fan_in) into float32 ``y`` (B, fan_out), fused:
    quantize x's rows, the integer (int8) or bf16 product, scales, bias, activation.
    ``acc``: None, or int32 (B, fan_out) receiving an int8 layer's integer sums Σ_k q_x·q_W
    (exactly reference.quantized_dense_forward's); always None for bf16."""


def quantized_mlp_forward(x, qbuffer, qlayers, out):
    """Every layer of ``qlayers`` over float32 ``x`` (B, n_in) into float32 ``out`` (B, n_out):
    one call; each layer's float32 output is quantized again as the next layer's input."""


def quantized_embedding_generate(embeddings, qbuffer, qlayers, context, uniforms, temperature, boundary, tokens,
                                 lengths):
    """embedding_generate over a quantized network: the float32 table ``embeddings``
    (vocab_size, dim) gathered for ``context`` tokens, then ``qlayers`` read as logits; writes
    ``tokens`` (n, max_len) and ``lengths`` (n,) (see reference.embedding_generate)."""


def sparse_dense_forward(indptr, indices, values, W, b, act_id, alpha, y, z):
    """z = X @ W + b for the CSR matrix X (B rows, W.shape[0] columns): each row of z is b plus
    W's rows ``indices[k]`` weighted by ``values[k]`` for k in indptr[i]:indptr[i+1] (a
    gather-sum; duplicate indices add up, their order does not matter); y = act(z); z may be
    None (not kept). indptr int64 (B+1,), indices int64 (nnz,) in range, values (nnz,) in W's dtype."""


def sparse_mlp_forward(indptr, indices, values, params, layers, out):
    """out = the network's output for CSR rows X (B rows, layers[0]'s fan_in columns): layers[0]
    as sparse_dense_forward (a gather-sum of its weight rows, + bias, activation), the layers
    above as mlp_forward; one call, the first layer's output in the engine's own scratch."""


def sparse_dense_backward(dy, indptr, indices, values, z, y, act_id, alpha, rows, dW_rows, db):
    """dz = dy · act'(z), db = Σ_rows dz, and W's gradient only at its rows ``rows`` (the sorted
    distinct column indices of X, int64): dW_rows[r] = Σ over the non-zeros k with
    indices[k] == rows[r] of values[k] · dz[row of k]. dW_rows (len(rows), n); no dense dW."""


def sparse_train_step(indptr, indices, values, targets, params, grads, opt_state, layers, loss_id, hyper,
                      outputs, sample_weight):
    """mlp_train_step with a CSR batch as the input of layers[0] (a sparse_dense_forward; at
    least one dense layer follows): forward, loss, backward, then the optimizer step of b0 and
    of every later layer, and of only the rows of W0 the batch touches (lazy: the other rows
    and their optimizer state are left as they are; momentum and Adam's moments of a row
    advance only on the steps that touch it, Adam's bias correction uses the global step).
    hyper[H_OPTIMIZER] may also be OPT_ADAGRAD (state: one row of squared-gradient sums;
    p −= lr·g/(√G + eps)). ``grads``: receives the gradient of b0 and the later layers; the
    W0 region of grads is not written (W0's gradient lives in per-step scratch of the touched
    rows). ``sample_weight`` as for mlp_gradient. Transactional and writes hyper[H_APPLIED] as
    mlp_train_step; returns the loss."""


def quantized_sparse_forward(indptr, indices, values, table, scales, b, act_id, alpha, y):
    """The sparse first layer of a quantized network: y = act(z), z = (X @ T) · scales + b for
    the CSR X (B rows, table.shape[0] columns, float32 values) and the quantized table T
    (fan_in, n): int8 codes, or bf16 bit patterns (uint16); scales float32 (n,) per column
    (W ≈ T · scales; ones for bf16), b float32 (n,), y float32 (B, n). Each row of X @ T is the
    gather-sum of T's rows ``indices[k]`` weighted by ``values[k]``, the codes widened to float32
    as they are read (float32 sums, duplicates add up)."""


#: The contract's function names, in the order above (engines define them in this order too).
FUNCTIONS = ("activation_forward", "activation_backward", "dense_forward", "dense_backward",
             "mlp_forward", "loss", "sgd_step", "adam_step", "mlp_gradient", "mlp_train_step",
             "mlp_train_epoch", "embedding_forward", "embedding_train_step", "embedding_generate",
             "quantized_dense_forward", "quantized_mlp_forward", "quantized_embedding_generate",
             "sparse_dense_forward", "sparse_mlp_forward", "sparse_dense_backward", "sparse_train_step",
             "quantized_sparse_forward")
