"""The performance bars of the Cython-backend issue, one pytest-benchmark group per bar: every
backend's kernel against NumPy as users write it, and for the dense epilogue against ``x @ W``
alone. Each system's answer is checked against the reference before it is timed.

    PYTHONPATH=src python -m pytest bench/bench_bars.py --benchmark-only --benchmark-json=bars.json
    python bench/ratios.py bars.json      # median µs and speed-up over the group's baseline

``fusedense bench`` times the same workloads in alternating blocks, the steadier method on a
noisy machine; this file keeps the bars in the pytest-benchmark suite (and checks them in CI).
"""
import numpy as np
import pytest

import fusedense as fd
from fusedense.benchmarking.systems import FusedenseKernel, NumpyMatmul, NumpyUser
from fusedense.benchmarking.workloads import FFN, MLP, TRAIN, dense_workload

DENSE = dense_workload(1024, 1024, "relu")
BARS = {  # name: (workload, batch)
    "mlp-b1": (MLP, 1), "mlp-b32": (MLP, 32), "mlp-b1024": (MLP, 1024),
    "dense-relu-b2048": (DENSE, 2048),
    "ffn-b64": (FFN, 64),
    "train-b32": (TRAIN, 32), "train-b256": (TRAIN, 256),
}
SYSTEMS = {s.name: s for s in [NumpyUser(), NumpyMatmul(), *(FusedenseKernel(b) for b in fd.backends())]}
CASES = [(bar, name) for bar, (workload, _) in BARS.items() for name in SYSTEMS
         if name != NumpyMatmul.name or NumpyMatmul.applies(workload)]


@pytest.mark.parametrize("bar, impl", CASES)
def test_bar(benchmark, check, bar, impl):
    workload, batch = BARS[bar]
    problem = workload.problem(batch, np.float32)
    run, result = SYSTEMS[impl].prepare(problem, fd.get_num_threads())
    run()
    check(result(), problem.expected())
    benchmark.group = f"{bar}: {workload.title}, batch {batch}"
    benchmark(run)
