"""In-process A/B of quantized inference: fusedense int8 (or bf16), ONNX Runtime's and PyTorch's
dynamic quantization and float32 fusedense on one workload and batch, 15 alternating rounds of 5
calls each, 1 thread; prints each system's median and its speed-up over float32 fusedense.
Used for the AVX2 table of docs/performance-notes.md ("Quantized inference"):

    FUSEDENSE_SIMD=avx2 ATEN_CPU_CAPABILITY=avx2 python bench/quantized_ab.py 64 mlp
    python bench/quantized_ab.py 1 ffn bf16
"""
import sys
import time

import numpy as np

import fusedense as fd
from fusedense.benchmarking import systems
from fusedense.benchmarking.workloads import FFN, MLP


def main(batch, workload, dtype="int8", rounds=15, calls=5):
    fd.set_num_threads(1)
    problem = {"mlp": MLP, "ffn": FFN}[workload].problem(batch, np.float32)
    runs = {}
    for system in (systems.FusedenseQuantized("cython", dtype), systems.OnnxRuntimeQuantized(dtype),
                   systems.TorchQuantized(dtype), systems.FusedenseKernel("cython")):
        try:
            run, _ = system.prepare(problem, 1)
        except systems.NotSupported:
            continue
        run()
        runs[system.name] = run
    seconds = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(calls):
                run()
            seconds[name].append((time.perf_counter() - start) / calls)
    base = np.median(seconds["fusedense-cython"])
    for name, values in seconds.items():
        print(f"{name}: {np.median(values) * 1e6:.0f} µs, {base / np.median(values):.2f}x float32 fusedense")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], *sys.argv[3:4])
