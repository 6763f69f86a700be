"""Multi-threaded timings with each system alone in its own process.

On a few cores, systems timed one after another in one process corrupt each other's numbers:
the thread pool one leaves spinning after its call (OpenMP, OpenBLAS, ONNX Runtime, PyTorch)
takes a core from the next one (docs/performance-notes.md). So with more than one thread,
``fusedense bench`` runs every system in a fresh process per round, one after the other, the
order rotated from round to round; each process times every cell (workload x batch) for its one
system, checking the answer first, exactly as the in-process runner does. A cell's median is the
median of the rounds' medians; its speed-up against NumPy is the median over rounds of the
ratio of the two processes' medians of the same round (taken minutes apart at most, so a load
drift over the run cancels).

The child is ``python -m fusedense.benchmarking.isolated``: a JSON spec on stdin, one JSON list
of rows on stdout.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np

from . import timing


def _cells(work, batches):
    """``[(workload, batch), ...]`` in report order."""
    return [(workload, batch) for workload in work for batch in batches or workload.batches]


def run_isolated(work, batches, systems, threads, method, dtype, dense_shape, activation):
    """The rows ``runner.measure`` would give, timed with each system alone in its process."""
    cells = _cells(work, batches)
    names = [system.name for system in systems]
    per_round = []  # one {system: [row per cell]} per round
    for r in range(method.rounds):
        found = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            spec = {"system": name, "cells": [[w.name, b] for w, b in cells], "dtype": np.dtype(dtype).name,
                    "threads": threads, "method": dataclasses.asdict(method),
                    "dense_shape": list(dense_shape), "activation": activation}
            found[name] = _child(spec)
        per_round.append(found)
        print(f"  done: round {r + 1} of {method.rounds}", file=sys.stderr, flush=True)
    return _combine(cells, names, per_round)


def _child(spec):
    """One system's rows, from a fresh process on the same thread count."""
    env = dict(os.environ, FUSEDENSE_NUM_THREADS=str(spec["threads"]))
    done = subprocess.run([sys.executable, "-m", "fusedense.benchmarking.isolated"], input=json.dumps(spec),
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"status": f"error: the process failed ({reason})"} for _ in spec["cells"]]
    return json.loads(done.stdout)


def _combine(cells, names, per_round):
    """One row per (cell, system): medians over rounds, speed-ups from same-round pairs."""
    rows = []
    for i, (workload, batch) in enumerate(cells):
        ok = {name: [found[name][i] for found in per_round] for name in names}
        numpy_seconds = None
        if "numpy" in ok and all(row["status"] == "ok" for row in ok["numpy"]):
            numpy_seconds = [row["median_us"] * 1e-6 for row in ok["numpy"]]
        for name in names:
            taken = ok[name]
            row = {"workload": workload.name, "title": workload.title, "batch": batch, "system": name,
                   "status": next((r["status"] for r in taken if r["status"] != "ok"), "ok")}
            if row["status"] == "ok":
                seconds = [r["median_us"] * 1e-6 for r in taken]
                row.update(timing.summarize(seconds, numpy_seconds))
                row["gflops"] = workload.flops(batch) / (row["median_us"] * 1e-6) / 1e9
                row["first_call_ms"] = taken[0]["first_call_ms"]
                row["rounds"] = len(taken)
            rows.append(row)
    return rows


def _main():
    from .. import threads as fd_threads
    from .runner import measure
    from .systems import system_named
    from .workloads import workloads

    spec = json.load(sys.stdin)
    system = system_named(spec["system"])
    method = timing.Method(**spec["method"])
    by_name = {w.name: w for w in workloads({name for name, _ in spec["cells"]}, tuple(spec["dense_shape"]),
                                            spec["activation"])}
    rows = []
    with fd_threads.threads_limited(spec["threads"]):
        for name, batch in spec["cells"]:
            problem = by_name[name].problem(batch, np.dtype(spec["dtype"]))
            row, = measure(problem, [system], spec["threads"], method)
            rows.append(row)
    json.dump(rows, sys.stdout)


if __name__ == "__main__":
    _main()
