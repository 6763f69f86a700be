"""Issue #19's bars: fd.MLPClassifier against scikit-learn's MLPClassifier on digits with each
solver ('lbfgs', 'adam', 'sgd'): test accuracy of both, and fit times measured in alternating
rounds with every side on one thread (fusedense.threads.threads_limited(1)).

    python bench/bench_sklearn_solvers.py [--rounds 5] [--dtype float64]
"""
import argparse
import warnings

import numpy as np

import fusedense as fd
from fusedense.benchmarking import timing
from fusedense.threads import threads_limited

SOLVERS = {"lbfgs": dict(solver="lbfgs", max_iter=200),
           "adam": dict(solver="adam", max_iter=100),
           "sgd": dict(solver="sgd", learning_rate_init=0.1, max_iter=100)}
COMMON = dict(hidden_layer_sizes=(100,), tol=0.0, random_state=0)  # tol=0: every side runs max_iter


def digits_split(dtype):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split((X / 16).astype(dtype), y, test_size=0.25, random_state=0)
    return Xtr, Xte, ytr, yte


def _fit(cls, params, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(**COMMON, **params).fit(X, y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    args = parser.parse_args(argv)
    from sklearn.neural_network import MLPClassifier
    Xtr, Xte, ytr, yte = digits_split(args.dtype)
    engine = fd.backends()[0]
    with threads_limited(1):
        for solver in args.solvers:
            params = SOLVERS[solver]
            sides = {f"fusedense-{engine}": lambda: _fit(fd.MLPClassifier, dict(params, backend=engine), Xtr, ytr),
                     "scikit-learn": lambda: _fit(MLPClassifier, params, Xtr, ytr)}
            scores = {name: fit().score(Xte, yte) for name, fit in sides.items()}
            times = timing.interleaved(sides, dict.fromkeys(sides, 1), args.rounds)
            ours, theirs = times
            ratios = np.divide(times[theirs], times[ours])
            print(f"{solver:5s} {args.dtype}: accuracy {scores[ours]:.4f} vs {scores[theirs]:.4f}; fit "
                  f"{np.median(times[ours]) * 1e3:.0f} ms vs {np.median(times[theirs]) * 1e3:.0f} ms: "
                  f"fusedense {np.median(ratios):.2f}x faster (per-round ratios "
                  f"{', '.join(f'{r:.2f}' for r in sorted(ratios))})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
