"""Where the numba engine's LM training step spends its time: each phase of
``_numba_kernels.embedding.embedding_train_step`` called on its own, from Python, at the
bench's shapes (bench/lm_engines.py), CPU time of the calling thread per call, next to the
whole step of both engines.

    python bench/lm_numba_phases.py [batch] [float32|float64]

A phase called from Python pays numba's dispatch (~0.2-0.5 µs a call), which the fused step
does not: the phases add up to a little more than the step.
"""
import sys
import time

import numpy as np

import fusedense as fd
from fusedense import abi
from fusedense._backends import cython_backend, numba_backend
from fusedense._numba_kernels import dense, embedding, losses, mlp, optimizers
from fusedense.embedding import EmbeddingMLP
from fusedense.layout import layer_record

fd.set_num_threads(1)
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
dtype = np.dtype(sys.argv[2] if len(sys.argv) > 2 else "float32")
net = EmbeddingMLP(27, 10, 3, [200, 27], "tanh", random_state=0, backend="numpy", dtype=dtype)
net.set_optimizer(fd.optimizers.Adam(learning_rate=1e-3))
rng = np.random.default_rng(0)
tokens, labels = rng.integers(0, 27, (batch, 3)), rng.integers(0, 27, batch)
layers = np.array(layer_record(net.layout, net.alphas, net.params.size))  # writable copy
hyper = np.array(net._hyper, np.float64)
hyper[abi.H_STEP] = 1
params = net.params.copy()
grads = np.zeros_like(params)
opt_state = np.zeros((2, params.size), dtype)
(W0, b0), (W1, b1) = (mlp.layer_params(params, layers, i) for i in range(2))
(dW0, db0), (dW1, db1) = (mlp.layer_params(grads, layers, i) for i in range(2))
tanh, identity = int(layers[0]["activation"]), int(layers[1]["activation"])
x = np.empty((batch, 30), dtype)
table = params[:270].reshape(27, 10)
embedding.gather(tokens, table, x)
z0, y0 = np.empty((batch, 200), dtype), np.empty((batch, 200), dtype)
z1, y1 = np.empty((batch, 27), dtype), np.empty((batch, 27), dtype)
dense.dense_rows(x, W0, b0, tanh, 0.0, z0, y0)
dense.dense_rows(y0, W1, b1, identity, 0.0, z1, y1)
d_out = np.empty_like(z1)
dx1, dx0 = np.empty((batch, 200), dtype), np.empty((batch, 30), dtype)
empty_i, empty_f = np.empty(0, np.int64), np.empty(0, dtype)
empty2 = np.empty((0, 0), dtype)
layers_ro = layer_record(net.layout, net.alphas, net.params.size)


batches = [(rng.integers(0, 27, (batch, 3)), rng.integers(0, 27, batch)) for _ in range(64)]


def whole(engine):
    """The whole step as bench/lm_engines.py runs it (a new batch each call)."""
    p, g, s, h = net.params.copy(), np.empty_like(params), np.zeros_like(opt_state), hyper.copy()
    count = [0]

    def run():
        t, l = batches[count[0] % len(batches)]
        count[0] += 1
        return engine.embedding_train_step(t, l, p, g, s, layers_ro, h, 27, None)
    return run


def engine_phases(e):
    """The step's phases through an engine's contract functions (no gate; each pays its
    engine's Python wrapper, which the fused step does not)."""
    y0e, z0e, z1e, dze = np.empty_like(y0), np.empty_like(z0), np.empty_like(z1), np.empty_like(d_out)
    dx1e, dx0e, g = np.empty_like(dx1), np.empty_like(dx0), np.zeros_like(grads)
    (dW0e, db0e), (dW1e, db1e) = (mlp.layer_params(g, layers, i) for i in range(2))
    p, m, v = params.copy(), np.zeros_like(params), np.zeros_like(params)
    return {
        "forward 0: x@W0+b0, tanh": lambda: e.dense_forward(x, W0, b0, tanh, 0.0, y0e, z0e),
        "forward 1: y0@W1+b1": lambda: e.dense_forward(y0, W1, b1, identity, 0.0, z1e, None),
        "softmax xent": lambda: e.loss(abi.LOSS_SPARSE_XENT, z1, labels, dze),
        "backward 1: dW1 db1 dx1": lambda: e.dense_backward(d_out, y0, W1, z1, None, identity, 0.0,
                                                            dx1e, dW1e, db1e),
        "backward 0: tanh' dW0 db0 dx": lambda: e.dense_backward(dx1, x, W0, None, y0, tanh, 0.0,
                                                                 dx0e, dW0e, db0e),
        "adam (11.9k params)": lambda: e.adam_step(p, grads, m, v, 1.0, 1e-3, 0.9, 0.999, 1e-7, 0.0, False),
    }


in_step = {  # the numba kernels the fused step runs, called on their own
    "gather": lambda: embedding.gather(tokens, table, x),
    "forward 0: x@W0+b0, tanh": lambda: dense.dense_rows(x, W0, b0, tanh, 0.0, z0, y0),
    "forward 1: y0@W1+b1": lambda: dense.dense_rows(y0, W1, b1, identity, 0.0, z1, y1),
    "softmax xent": lambda: losses.loss_and_gradient(abi.LOSS_SPARSE_XENT, z1, y1, labels, empty2,
                                                     empty_f, d_out),
    "backward 1: dW1 db1 dx1": lambda: dense.dense_backward(d_out, y0, W1, z1, y1, identity, 0.0,
                                                            dx1, dW1, db1),
    "backward 0: tanh' dW0 db0 dx": lambda: dense.dense_backward(dx1, x, W0, z0, y0, tanh, 0.0,
                                                                 dx0, dW0, db0),
    "scatter_add": lambda: embedding.scatter_add(tokens, dx0, grads[:270].reshape(27, 10)),
    "adam (11.9k params)": lambda: optimizers.adam_step(params, grads, opt_state[0], opt_state[1], 1.0, 1e-3,
                                                        0.9, 0.999, 1e-7, 0.0, False),
    "whole step": whole(numba_backend),
}
columns = {"numba kernel": in_step, "numba contract": engine_phases(numba_backend),
           "cython contract": {**engine_phases(cython_backend), "whole step": whole(cython_backend)}}
phases = {(column, name): f for column, fs in columns.items() for name, f in fs.items()}
for f in phases.values():  # compile, warm
    for _ in range(50):
        f()
results = {key: [] for key in phases}
for _ in range(7):
    for key, f in phases.items():
        n = 400
        start = time.thread_time()
        for _ in range(n):
            f()
        results[key].append((time.thread_time() - start) / n)
print(f"{'phase (µs, CPU)':30s}" + "".join(f"{c:>17s}" for c in columns))
sums = {c: 0.0 for c in columns}
for name in in_step:
    cells = ""
    for c in columns:
        t = results.get((c, name))
        cells += f"{'':>17s}" if t is None else f"{float(np.median(t)) * 1e6:17.2f}"
        if t is not None and name != "whole step":
            sums[c] += float(np.median(t)) * 1e6
    print(f"{name:30s}{cells}")
print(f"{'sum of the phases':30s}" + "".join(f"{sums[c]:17.2f}" for c in columns))
