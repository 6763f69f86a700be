"""In-process A/B of quantized inference: fusedense int8 (or bf16), ONNX Runtime's and PyTorch's
dynamic quantization and float32 fusedense on one workload and batch, 15 alternating rounds of 5
calls each, 1 thread; prints each system's median and minimum and its speed-up over float32
fusedense.
Used for the AVX2 table of docs/performance-notes.md ("Quantized inference"):

    FUSEDENSE_SIMD=avx2 ATEN_CPU_CAPABILITY=avx2 python bench/quantized_ab.py 64 mlp
    python bench/quantized_ab.py 1 ffn bf16
    FUSEDENSE_SIMD=avx2 python bench/quantized_ab.py 256 mlp int8 --fusedense-only

--fusedense-only times fusedense int8/bf16 against float32 fusedense alone: ONNX Runtime's pool
threads spin after its calls, and on a loaded 2-core machine that took a core from the system
timed after it (fusedense int8 and float32 at batch 256 both ran ~2.5x slower per row with it in
the rounds than without).
"""
import sys
import time

import numpy as np

import fusedense as fd
from fusedense.benchmarking import systems
from fusedense.benchmarking.workloads import FFN, MLP


def main(batch, workload, dtype="int8", rounds=15, calls=5, peers=True):
    fd.set_num_threads(1)
    problem = {"mlp": MLP, "ffn": FFN}[workload].problem(batch, np.float32)
    runs = {}
    chosen = [systems.FusedenseQuantized("cython", dtype), systems.FusedenseKernel("cython")]
    if peers:
        chosen[1:1] = [systems.OnnxRuntimeQuantized(dtype), systems.TorchQuantized(dtype)]
    for system in chosen:
        if system.missing():  # (a peer that is not installed)
            continue
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
    base, base_min = np.median(seconds["fusedense-cython"]), np.min(seconds["fusedense-cython"])
    for name, values in seconds.items():  # (the minimum: what a loaded machine disturbs least)
        print(f"{name}: median {np.median(values) * 1e6:.0f} µs, {base / np.median(values):.2f}x float32 fusedense; "
              f"min {np.min(values) * 1e6:.0f} µs, {base_min / np.min(values):.2f}x")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--fusedense-only"]
    main(int(arguments[0]), arguments[1], *arguments[2:3], peers="--fusedense-only" not in sys.argv)
