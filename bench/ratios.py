"""Median time per implementation and speed-up against the NumPy baseline, per group.

    python bench/ratios.py bench.json

The baseline of a group is "numpy_matmul_only" when present (the dense-epilogue bar),
else "numpy_user". Ratio > 1: faster than the baseline (for the matmul-only group the
table also shows time / baseline, the ≤ 1.05 bar).
"""
import json
import sys
from collections import defaultdict


def main(path):
    with open(path) as f:
        runs = json.load(f)["benchmarks"]
    groups = defaultdict(dict)
    for run in runs:
        groups[run["group"]][run["params"]["impl"]] = run["stats"]["median"] * 1e6
    for group, medians in groups.items():
        base_name = "numpy_matmul_only" if "numpy_matmul_only" in medians else "numpy_user"
        base = medians[base_name]
        print(f"\n{group}  (baseline {base_name})")
        for impl, us in medians.items():
            print(f"  {impl:22s} {us:10.1f} µs   speed-up {base / us:5.2f}x   time/baseline {us / base:5.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
