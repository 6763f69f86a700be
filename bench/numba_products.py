"""The numba engine's tiled products at batch 1 and 3 (a lone row, and a lone row after a
2-row tile), each shape timed inside one compiled loop (no call overhead), best of 7.

    python bench/numba_products.py

(Clear numba's cache of this script, ``bench/__pycache__``, when comparing two versions of
``_numba_kernels``: numba checks only the caller's file for staleness.)
"""
import time

import numpy as np

from fusedense._numba_kernels import gemm
from fusedense._numba_kernels.jit import kernel

SHAPES = [(784, 128), (128, 64), (64, 10), (96, 500), (500, 27), (784, 200), (784, 8), (1024, 4096), (4096, 1024)]


@kernel
def _repeat(a, b, out, n):
    for _ in range(n):
        gemm.tiled_matmul(a, b, out)


def main():
    rng = np.random.default_rng(0)
    print("| m × k × n | µs |\n|---|---:|")
    for k, n in SHAPES:
        for m in (1, 3):
            a = rng.random((m, k), dtype=np.float32)
            b = rng.random((k, n), dtype=np.float32)
            out = np.empty((m, n), np.float32)
            _repeat(a, b, out, 1)
            np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5)
            best = np.inf
            for _ in range(7):
                start = time.perf_counter()
                _repeat(a, b, out, 5000)
                best = min(best, (time.perf_counter() - start) / 5000)
            print(f"| {m} × {k} × {n} | {1e6 * best:.3f} |")


if __name__ == "__main__":
    main()
