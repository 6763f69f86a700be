"""Where one fd.MLPClassifier fit on digits (issue #19's settings, one thread) spends its time
outside the engine: the whole fit, the setup (a fit of one epoch, minus one epoch), the
estimator's epochs (``_epoch``: the engine call plus the estimator's Python around it) and the
bare engine epochs (``MLP.fused_epoch`` on the same shuffled orders), and the epochs'
permutations. Best of ``--repeats`` each (a busy machine only adds time).

    python bench/sklearn_fit_split.py [--solver adam|sgd] [--dtype float64|float32]
    perf record -D 3000 -F 9999 python bench/sklearn_fit_split.py --fits-only 25   # the engine's split

The split inside the engine call (products, loss, optimizer) comes from ``perf record``, see
docs/performance-notes.md ("Where a float64 fit spends its time").
"""
import argparse
import os
import time
import warnings

import numpy as np

import fusedense as fd
from fusedense.threads import threads_limited

from bench_sklearn_solvers import COMMON, SOLVERS, digits_split


def best_of(repeats, function):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", default="adam", choices=("adam", "sgd"))
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fits-only", type=int, default=0, metavar="N",
                        help="only N fits, for a profiler started after the imports (perf record -D)")
    args = parser.parse_args(argv)
    X, _, y, _ = digits_split(args.dtype)
    params = dict(COMMON, **SOLVERS[args.solver], backend="cython")
    epochs = params["max_iter"]
    with threads_limited(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.fits_only:
            for _ in range(args.fits_only):
                fd.MLPClassifier(**params).fit(X, y)
            os._exit(0)  # (no interpreter teardown in the profile)
        fit = best_of(args.repeats, lambda: fd.MLPClassifier(**params).fit(X, y))
        one_epoch_fit = best_of(args.repeats, lambda: fd.MLPClassifier(**dict(params, max_iter=1)).fit(X, y))
        estimator = fd.MLPClassifier(**dict(params, max_iter=1)).fit(X, y)
        net = estimator.network_
        targets = np.ascontiguousarray(y, dtype=np.int64)
        rng = np.random.default_rng(0)
        orders = [rng.permutation(len(X)) for _ in range(epochs)]
        estimator_epochs = best_of(args.repeats, lambda: [estimator._epoch(X, targets, None, 200, o) for o in orders])
        engine_epochs = best_of(args.repeats, lambda: [
            net.fused_epoch(X, targets, estimator._loss_id, 200, o, None, penalty_over_weight=True,
                            epsilon_on_sqrt_v=False) for o in orders])
        permutations = best_of(args.repeats, lambda: [rng.permutation(len(X)) for _ in range(epochs)])
    setup = one_epoch_fit - engine_epochs / epochs
    print(f"{args.solver} {args.dtype}, {epochs} epochs: fit {fit * 1e3:.1f} ms; setup ~{setup * 1e3:.2f} ms "
          f"(one-epoch fit {one_epoch_fit * 1e3:.2f} ms); estimator epochs {estimator_epochs * 1e3:.1f} ms; "
          f"engine epochs {engine_epochs * 1e3:.1f} ms; permutations {permutations * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
