"""The fastest of ~N seconds of calls of each `fusedense bench` workload (the kernel called
directly), 1 and 2 threads alternated call by call in one process: the scaling with the
least disturbance from other processes (docs/performance-notes.md, "All cores").

    chrt -f 10 python bench/fastest_calls.py 0.5        # real-time priority: as on an idle machine
"""
import sys
import time

import numpy as np

import fusedense as fd
from fusedense.benchmarking.systems import FusedenseKernel
from fusedense.benchmarking.workloads import workloads


def main(seconds=3.0):
    system = FusedenseKernel("cython")
    for workload in workloads(["dense", "ffn", "mlp", "train"]):
        for batch in workload.batches:
            run, _ = system.prepare(workload.problem(batch, np.float32), 2)
            best = {1: np.inf, 2: np.inf}
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                for threads in best:
                    fd.set_num_threads(threads)
                    run()  # a warm call at this count first
                    start = time.perf_counter()
                    run()
                    best[threads] = min(best[threads], time.perf_counter() - start)
            print(f"{workload.name} b{batch}: fastest call 1T {best[1] * 1e6:.1f} µs, 2T {best[2] * 1e6:.1f} µs, "
                  f"x{best[1] / best[2]:.2f}", flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
