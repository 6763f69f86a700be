"""``fusedense bench``: fusedense against NumPy and its peers on the same workloads, same threads.

    fusedense bench --quick                               # < 1 min, prints the table
    fusedense bench --plot docs/bench.png --json docs/bench.json   # the README figure
    fusedense bench --workload mlp --batch 1,32 --threads 1
    fusedense bench --quantized int8 --workload ffn --batch 1 --threads 1   # int8 against the peers'

Every system's output is checked against the NumPy reference before it is timed; a wrong answer
is reported, never timed. Peers that are not installed are listed, not errors.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys

import numpy as np

from .. import threads as fd_threads
from ..activations import ACTIVATIONS
from ..benchmarking import report, timing
from ..benchmarking.runner import measure
from ..benchmarking.systems import QUANTIZED_DTYPES, all_systems, known_names
from ..benchmarking.workloads import NAMES, workloads
from .options import UsageError, output_path, thread_count

#: one line for ``fusedense --help``
HELP = "compare fusedense with NumPy, PyTorch, ONNX Runtime and JAX: latency, speed-up, GFLOP/s"


#: Bounds of the sizes a run may ask for: 64k rows of 16k floats is already 4 GB.
MAX_BATCH = 1 << 16
MAX_WIDTH = 1 << 14


def _batches(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes like 1,32,1024, got {text!r}") from None
    if not 1 <= min(values) <= max(values) <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"batch sizes must be in [1, {MAX_BATCH}], got {text!r}")
    return values


def _shape(text):
    try:
        n_in, n_out = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IN x OUT like 1024x1024, got {text!r}") from None
    if not (1 <= n_in <= MAX_WIDTH and 1 <= n_out <= MAX_WIDTH):
        raise argparse.ArgumentTypeError(f"both sizes must be in [1, {MAX_WIDTH}], got {text!r}")
    return n_in, n_out


def _system_names(text):
    """A comma-separated list of known system names (installed or not: missing ones are listed)."""
    names = {name.strip() for name in text.split(",")}
    known = known_names()
    unknown = names - set(known)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(sorted(unknown))}; expected some of {', '.join(known)}")
    return names


def add_arguments(parser):
    parser.add_argument("--workload", action="append", choices=NAMES,
                        help="repeatable; default: all of " + ", ".join(NAMES))
    parser.add_argument("--batch", type=_batches, help="batch sizes for every workload (default: per workload)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="threads for every system (default: fusedense's count, i.e. the usable cores)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples (about a minute at most)")
    parser.add_argument("--dense-shape", type=_shape, default=(1024, 1024), metavar="INxOUT",
                        help="shape of the 'dense' workload (default 1024x1024)")
    parser.add_argument("--activation", default="relu", choices=ACTIVATIONS, metavar="NAME",
                        help="activation of the 'dense' workload (default relu; any of fd.ACTIVATIONS)")
    parser.add_argument("--quantized", choices=QUANTIZED_DTYPES,
                        help="compare quantized inference: fusedense int8/bf16 (fd.quantize), PyTorch's and ONNX "
                             "Runtime's dynamic quantization, beside float32 fusedense and NumPy (inference "
                             "workloads, float32)")
    parser.add_argument("--systems", type=_system_names, help="comma-separated system names to run (default: all installed)")
    parser.add_argument("--json", type=output_path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--plot", type=output_path, metavar="PATH", help="also plot latency and GFLOP/s (needs matplotlib)")


def check(args):
    if args.quantized and (args.dtype != "float32" or "train" in (args.workload or ())):
        raise UsageError("argument --quantized: quantizes float32 inference (no --dtype float64, no train workload)")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("argument --plot: needs matplotlib (pip install matplotlib)")


def _select_systems(wanted, quantized=None):
    """``(systems to run, {name: why not})`` for a set of names (None: all)."""
    known = all_systems(quantized)
    if wanted is not None:
        known = [system for system in known if system.name in wanted]
    missing = {system.name: system.missing() for system in known if system.missing()}
    return [system for system in known if system.name not in missing], missing


def run(args) -> int:
    dtype = np.dtype(args.dtype)
    threads = args.threads or fd_threads.get_num_threads()
    method = timing.QUICK if args.quick else timing.FULL
    default = [w for w in NAMES if w != "train"] if args.quantized else NAMES
    chosen = [w for w in NAMES if w in (args.workload or default)]
    work = workloads(chosen, args.dense_shape, args.activation)
    systems, missing = _select_systems(args.systems, args.quantized)
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
              "settings": {"dtype": dtype.name, "threads": threads, "quick": args.quick, "quantized": args.quantized,
                           "method": dataclasses.asdict(method)},
              "results": results}
    print(report.markdown(result))
    if args.json:
        report.write_json(result, args.json)
    if args.plot:
        report.plot(result, args.plot)
    return 0
