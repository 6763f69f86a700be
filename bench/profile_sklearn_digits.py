"""Where a float64 fd.MLPClassifier fit on digits spends its time (issue #19's 3x bar), one thread:
the fit against the same number of bare engine steps, the engine's step against its layer
products (each timed alone: dense_forward / dense_backward of the step's shapes) and against
the arithmetic (flops over the best product rate measured in the same run).

    python bench/profile_sklearn_digits.py [--solver adam] [--repeats 7]

Times are the best of ``--repeats`` (a busy shared machine only ever adds time); the fit and the
bare steps alternate round by round, and their per-round ratio is reported too.
"""
import argparse
import time
import warnings

import numpy as np

import fusedense as fd
from fusedense import _backends, abi
from fusedense.threads import threads_limited

from bench_sklearn_solvers import COMMON, SOLVERS, digits_split


def best_of(repeats, function, number=1):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            function()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", default="adam", choices=("adam", "sgd"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    Xtr, _, ytr, _ = digits_split("float64")
    params = dict(COMMON, **SOLVERS[args.solver], backend="cython")
    engine = _backends.load_engine("cython")
    rng = np.random.default_rng(0)
    with threads_limited(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = fd.MLPClassifier(**dict(params, max_iter=1)).fit(Xtr, ytr).network_
        batches = [(np.ascontiguousarray(Xtr[s:s + 200]), np.ascontiguousarray(ytr[s:s + 200], dtype=np.int64))
                   for s in range(0, len(Xtr), 200)]
        p, grads, state, hyper = net.params.copy(), np.zeros_like(net.params), net.opt_state.copy(), net._hyper.copy()
        hyper[abi.H_STEP] = 1

        def epoch():
            for xb, yb in batches:
                engine.mlp_train_step(xb, yb, p, grads, state, net.layers, abi.LOSS_SPARSE_XENT, hyper, None, None)
        # alternating, so that both sides of each round's ratio see the same load
        rounds = []
        for _ in range(args.repeats):
            rounds.append((best_of(1, lambda: fd.MLPClassifier(**params).fit(Xtr, ytr)),
                           best_of(1, lambda: [epoch() for _ in range(params["max_iter"])])))
        fit, steps = min(r[0] for r in rounds), min(r[1] for r in rounds)
        share = sorted(r[1] / r[0] for r in rounds)
        x, y = batches[0]
        step = best_of(args.repeats, lambda: engine.mlp_train_step(x, y, p, grads, state, net.layers,
                                                                   abi.LOSS_SPARSE_XENT, hyper, None, None), 200)
        gated = best_of(args.repeats, lambda: net.engine.mlp_train_step(x, y, p, grads, state, net.layers,
                                                                        abi.LOSS_SPARSE_XENT, hyper, None, None), 200)
        products, rate = {}, 0.0
        for k, n in ((64, 100), (100, 10)):
            a, W, b = rng.random((200, k)), rng.random((k, n)), np.zeros(n)
            out, dy, dW, db, dx = np.empty((200, n)), rng.random((200, n)), np.empty((k, n)), np.empty(n), np.empty((200, k))
            forward = best_of(args.repeats, lambda: engine.dense_forward(a, W, b, 0, 0.0, out, None), 200)
            dW_db = best_of(args.repeats, lambda: engine.dense_backward(dy, a, W, None, out, 0, 0.0, None, dW, db), 200)
            with_dx = best_of(args.repeats, lambda: engine.dense_backward(dy, a, W, None, out, 0, 0.0, dx, dW, db), 200)
            products[f"{k}x{n}"] = (forward, dW_db, with_dx - dW_db)
            rate = max(rate, 2 * 200 * k * n / min(forward, dW_db))
        adam = best_of(args.repeats, lambda: engine.adam_step(p, grads, state[0], state[1], 1, 1e-12, 0.9, 0.999,
                                                              1e-8, 0.0, False), 200)
    rows = len(Xtr) * params["max_iter"]
    flops = rows * 2 * (64 * 100 + 100 * 10) * 2 + rows * 2 * 100 * 10  # forward, both dW, the hidden dx
    print(f"fit ({args.solver}, {params['max_iter']} epochs, {len(batches)} batches each): {fit * 1e3:.0f} ms; "
          f"the same steps on the bare engine: {steps * 1e3:.0f} ms; per round {share[0]:.0%}-{share[-1]:.0%} "
          f"(median {share[len(share) // 2]:.0%}) of the fit")
    print(f"one 200-row step: {step * 1e6:.0f} us, through the gate +{(gated - step) * 1e6:.1f} us")
    for shape, (forward, dW_db, dx) in products.items():
        print(f"  layer {shape}: forward {forward * 1e6:.1f} us, dW+db {dW_db * 1e6:.1f} us, dx {dx * 1e6:.1f} us")
    print(f"  Adam pass over {p.size} parameters: {adam * 1e6:.1f} us")
    print(f"arithmetic: {flops / 1e9:.2f} GFLOP per fit; best product rate here {rate / 1e9:.1f} GFLOP/s -> "
          f"{flops / rate * 1e3:.0f} ms at that rate; the fit runs at {flops / fit / 1e9:.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
