"""Median time per system and speed-up against the group's baseline, from a pytest-benchmark JSON.

    python bench/ratios.py bars.json

The baseline is "numpy-matmul" (``x @ W`` alone: the dense-epilogue bar, time/baseline ≤ 1.05)
when the group has it, else "numpy" (NumPy as users write it). Speed-up > 1: faster.
"""
import json
import sys
from collections import defaultdict

BASELINES = ("numpy-matmul", "numpy")


def main(path):
    with open(path) as f:
        runs = json.load(f)["benchmarks"]
    groups = defaultdict(dict)
    for run in runs:
        groups[run["group"]][run["params"]["impl"]] = run["stats"]["median"] * 1e6
    for group, medians in groups.items():
        base_name = next((name for name in BASELINES if name in medians), None)
        if base_name is None:
            print(f"\n{group}: no baseline ({' or '.join(BASELINES)}) was run")
            continue
        base = medians[base_name]
        print(f"\n{group}  (baseline {base_name})")
        for impl, us in medians.items():
            print(f"  {impl:22s} {us:10.1f} µs   speed-up {base / us:5.2f}x   time/baseline {us / base:5.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
