"""The character LM's training step, numba engine against Cython engine, kernels called
directly (no gate), alternating blocks in one process; prints the ratio of median step times.

    python bench/lm_engines.py [batch] [float32|float64] [wall|cpu] [embedding hidden]

The model is the LM's of issue 15 (embedding 10, hidden 200) unless ``embedding hidden`` are
given (``fusedense lm``'s defaults: 32 500).

``cpu`` times the calling thread's CPU time instead of the wall clock: on a machine shared with
other jobs the wall clock counts the time the process waits for a core (the engines' kernels
run on the calling thread at one thread).
"""
import inspect
import sys
import time

import numpy as np

import fusedense as fd
from fusedense import abi
from fusedense._backends import cython_backend, numba_backend
from fusedense.embedding import EmbeddingMLP
from fusedense.layout import layer_record

fd.set_num_threads(1)
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
dtype = np.dtype(sys.argv[2] if len(sys.argv) > 2 else "float32")
clock = time.thread_time if len(sys.argv) > 3 and sys.argv[3] == "cpu" else time.perf_counter
dim, hidden = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (10, 200)
net = EmbeddingMLP(27, dim, 3, [hidden, 27], "tanh", random_state=0, backend="numpy", dtype=dtype)
net.set_optimizer(fd.optimizers.Adam(learning_rate=1e-3))
rng = np.random.default_rng(0)
batches = [(rng.integers(0, 27, (batch, 3)), rng.integers(0, 27, batch)) for _ in range(64)]
layers = layer_record(net.layout, net.alphas, net.params.size)
hyper = np.array(net._hyper, np.float64)


def side(engine):
    params, grads = net.params.copy(), np.empty_like(net.params)
    opt_state, step = np.zeros((2, net.params.size), dtype), {"i": 0}
    if "layers" in inspect.signature(engine.embedding_train_step).parameters:
        network = (layers, hyper.copy())
    else:  # an engine still on (layout, alphas) and the 9-entry hyper
        network = (np.ascontiguousarray(net.layout), np.ascontiguousarray(net.alphas), hyper[:9].copy())

    def run():
        tokens, labels = batches[step["i"] % len(batches)]
        step["i"] += 1
        network[-1][abi.H_STEP] = step["i"]  # Adam's step, from 1, as the model sets it (at 0,
        # the bias correction divides by zero: NaN parameters, and every later step skipped)
        return engine.embedding_train_step(tokens, labels, params, grads, opt_state, *network, 27, None)
    return run


sides = {"numba": side(numba_backend), "cython": side(cython_backend)}
losses = {name: [run() for _ in range(5)] for name, run in sides.items()}
assert np.all(np.isfinite(losses["numba"])), losses  # a step on NaN parameters times nothing real
np.testing.assert_allclose(losses["numba"], losses["cython"], rtol=1e-4)
for run in sides.values():
    for _ in range(200):
        run()
times = {name: [] for name in sides}
for _ in range(9):
    for name, run in sides.items():
        start = clock()
        for _ in range(300):
            run()
        times[name].append((clock() - start) / 300)
median = {name: float(np.median(t)) for name, t in times.items()}
for name, t in median.items():
    print(f"{name}: {t * 1e6:.1f} µs/step, {batch / t / 1e3:.0f}k chars/s")
print(f"{dtype} batch {batch}: numba / cython step time {median['numba'] / median['cython']:.2f}")
