"""A/B of one estimator fit between two source trees, alternating processes: each round runs
one process per tree (order alternating), each process times ``fd.MLPClassifier(...).fit`` on
digits (the settings of bench_sklearn_solvers.py) under ``threads_limited(1)``, best of 3.

    python bench/ab_sklearn_fit.py BASE_SRC [--rounds 5] [--solver adam] [--dtype float64]

BASE_SRC: the ``src`` directory of the other tree (built in place); this tree is the one this
script's fusedense imports from. Prints per-round ratios base / this (> 1: this tree faster).
"""
import argparse
import os
import subprocess
import sys

import numpy as np

CHILD = """
import sys, time, warnings
sys.path.insert(0, {bench!r})
import fusedense as fd
from fusedense.threads import threads_limited
from bench_sklearn_solvers import COMMON, SOLVERS, digits_split
X, _, y, _ = digits_split({dtype!r})
warnings.simplefilter("ignore")
best = float("inf")
with threads_limited(1):
    for _ in range(3):
        t = time.perf_counter()
        fd.MLPClassifier(**COMMON, **SOLVERS[{solver!r}]).fit(X, y)
        best = min(best, time.perf_counter() - t)
print(best)
"""


def _time(src, args):
    env = dict(os.environ, PYTHONPATH=src)
    code = CHILD.format(bench=os.path.dirname(os.path.abspath(__file__)), dtype=args.dtype, solver=args.solver)
    return float(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                text=True).stdout.split()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_src")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--solver", default="adam", choices=("adam", "sgd", "lbfgs"))
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    args = parser.parse_args(argv)
    this = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src")
    ratios = []
    for r in range(args.rounds):
        order = [("base", args.base_src), ("this", this)]
        times = dict((name, _time(src, args)) for name, src in (order if r % 2 == 0 else order[::-1]))
        ratios.append(times["base"] / times["this"])
        print(f"round {r + 1}: base {times['base'] * 1e3:.0f} ms, this {times['this'] * 1e3:.0f} ms, "
              f"base/this {ratios[-1]:.2f}", flush=True)
    print(f"{args.solver} {args.dtype}: base/this median {np.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
