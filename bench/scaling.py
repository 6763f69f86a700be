"""Thread scaling of one system, each (build, thread count) alone in its own process, the
processes alternated over rounds: the 2-thread / 1-thread ratios of docs/performance-notes.md.

    python bench/scaling.py                                   # fusedense-cython, every workload
    python bench/scaling.py --src /tmp/base/src --src src     # two builds side by side
    python bench/scaling.py --system onnxruntime --threads 1,2 --rounds 5

Each process is ``fusedense.benchmarking.isolated``'s child (answer checked, then timed); a
build is a source tree put first on PYTHONPATH (its compiled kernels built in place).
"""
import argparse
import dataclasses
import os
import statistics

from fusedense.benchmarking import isolated, timing
from fusedense.benchmarking.workloads import NAMES, workloads


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", help="a build's source tree (default: the installed one)")
    parser.add_argument("--system", default="fusedense-cython")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workload", action="append", choices=NAMES)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    builds = args.src or [None]
    cells = [(w, b) for w in workloads(args.workload or NAMES) for b in w.batches]
    method = dataclasses.asdict(timing.QUICK)
    seconds = {}  # (build, threads) -> [[per cell] per round]: each process's median
    best = {}  # the same, each process's fastest sample (the least disturbed by other processes)
    for r in range(args.rounds):
        runs = [(s, t) for s in builds for t in counts]
        for build, threads in runs[r % len(runs):] + runs[:r % len(runs)]:
            spec = {"system": args.system, "cells": [[w.name, b] for w, b in cells], "dtype": "float32",
                    "threads": threads, "method": method, "dense_shape": [1024, 1024], "activation": "relu"}
            saved = os.environ.get("PYTHONPATH")
            if build:
                os.environ["PYTHONPATH"] = os.path.abspath(build)
            try:
                rows = isolated._child(spec)
            finally:
                os.environ.pop("PYTHONPATH", None) if saved is None else os.environ.update(PYTHONPATH=saved)
            seconds.setdefault((build, threads), []).append([row.get("median_us", float("nan")) for row in rows])
            best.setdefault((build, threads), []).append([min(row.get("samples_us", [float("nan")])) for row in rows])
    print(f"{args.system}, µs (median of {args.rounds} rounds' medians); ratio = {counts[0]}-thread time / "
          "n-thread time, median of same-round ratios; best: fastest sample of any round, and its ratio")
    for i, (w, b) in enumerate(cells):
        line = [f"{w.name} b{b}"]
        for build in builds:
            per = {t: [rnd[i] for rnd in seconds[(build, t)]] for t in counts}
            line += [f"{os.path.basename(os.path.dirname(os.path.abspath(build))) if build else 'installed'}:"]
            line += [f"{t}T {statistics.median(per[t]):.1f}" for t in counts]
            line += [f"x{statistics.median(a / c for a, c in zip(per[counts[0]], per[t])):.2f}" for t in counts[1:]]
            fastest = {t: min(rnd[i] for rnd in best[(build, t)]) for t in counts}
            line += ["best " + " ".join(f"{t}T {fastest[t]:.1f}" for t in counts)]
            line += [f"x{fastest[counts[0]] / fastest[t]:.2f}" for t in counts[1:]]
        print("  ".join(line))


if __name__ == "__main__":
    main()
