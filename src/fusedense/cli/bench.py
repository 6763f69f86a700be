"""``fusedense bench``: fusedense against NumPy and its peers on the same workloads, same threads.

    fusedense bench --quick                               # < 1 min, prints the table
    fusedense bench --plot docs/bench.png --json docs/bench.json   # the README figure
    fusedense bench --workload mlp --batch 1,32 --threads 1

Every system's output is checked against the NumPy reference before it is timed; a wrong answer
is reported, never timed. Peers that are not installed are listed, not errors.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from .. import threads as fd_threads
from ..activations import ACTIVATIONS
from ..benchmarking import report, timing
from ..benchmarking.runner import measure
from ..benchmarking.systems import all_systems
from ..benchmarking.workloads import NAMES, workloads
from .options import positive_int

#: one line for ``fusedense --help``
HELP = "compare fusedense with NumPy, PyTorch, ONNX Runtime and JAX: latency, speed-up, GFLOP/s"


def _batches(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes like 1,32,1024, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def _shape(text):
    try:
        n_in, n_out = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IN x OUT like 1024x1024, got {text!r}") from None
    return n_in, n_out


def add_arguments(parser):
    parser.add_argument("--workload", action="append", choices=NAMES,
                        help="repeatable; default: all of " + ", ".join(NAMES))
    parser.add_argument("--batch", type=_batches, help="batch sizes for every workload (default: per workload)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for every system (default: fusedense's count, i.e. the usable cores)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples (about a minute at most)")
    parser.add_argument("--dense-shape", type=_shape, default=(1024, 1024), metavar="INxOUT",
                        help="shape of the 'dense' workload (default 1024x1024)")
    parser.add_argument("--activation", default="relu", choices=ACTIVATIONS, metavar="NAME",
                        help="activation of the 'dense' workload (default relu; any of fd.ACTIVATIONS)")
    parser.add_argument("--systems", help="comma-separated system names to run (default: all installed)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="also plot latency and GFLOP/s (needs matplotlib)")


def _select_systems(names):
    """``(systems to run, {name: why not})`` for a comma-separated list of names (None: all)."""
    known = all_systems()
    if names is not None:
        wanted = {name.strip() for name in names.split(",")}
        unknown = wanted - {system.name for system in known}
        if unknown:
            raise SystemExit(f"--systems: unknown {', '.join(sorted(unknown))}; "
                             f"expected some of {', '.join(system.name for system in known)}")
        known = [system for system in known if system.name in wanted]
    missing = {system.name: system.missing() for system in known if system.missing()}
    return [system for system in known if system.name not in missing], missing


def run(args) -> int:
    dtype = np.dtype(args.dtype)
    threads = args.threads or fd_threads.get_num_threads()
    method = timing.QUICK if args.quick else timing.FULL
    chosen = [w for w in NAMES if w in (args.workload or NAMES)]
    work = workloads(chosen, args.dense_shape, args.activation)
    systems, missing = _select_systems(args.systems)
    results = []
    with fd_threads.threads_limited(threads):
        machine = timing.machine(threads, dtype, method.peak_n)
        for workload in work:
            for batch in args.batch or workload.batches:
                problem = workload.problem(batch, dtype)
                results += measure(problem, systems, threads, method)
                print(f"  done: {workload.name} batch {batch}", file=sys.stderr, flush=True)
        machine["blas"] = timing.blas_info()  # now that every system has loaded its libraries
        # the best of two peak measurements, one before and one after: noise only ever slows down
        machine["peak_gflops"] = max(machine["peak_gflops"], timing.gemm_peak(dtype, method.peak_n))
    for row in results:
        if row["status"] == "ok":
            row["peak_fraction"] = row["gflops"] / machine["peak_gflops"]
    result = {"machine": machine, "missing": missing,
              "settings": {"dtype": dtype.name, "threads": threads, "quick": args.quick,
                           "method": dataclasses.asdict(method)},
              "results": results}
    print(report.markdown(result))
    if args.json:
        report.write_json(result, args.json)
    if args.plot:
        report.plot(result, args.plot)
    return 0
