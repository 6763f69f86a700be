"""What dropout costs in the fused training step: the Cython engine's step without dropout and with
it, alternating blocks of 50 steps in one process, one thread; prints the median µs per step.

    python bench/dropout_cost.py

- the character LM (batch 64, context 3 × 32 → 500 tanh → 27): Dropout(0.1) on the hidden
  layer's outputs ("hidden"), and on the embeddings too ("both");
- the 784-128-64-10 relu MLP (batch 32): Dropout(0.2) before the 2nd and 3rd Dense layers.
"""
import time

import numpy as np

import fusedense as fd
from fusedense.embedding import EmbeddingMLP


def median_step_us(steps, rounds=15, block=50):
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(block):
                step()
            times[name].append((time.perf_counter() - start) / block * 1e6)
    return {name: float(np.median(t)) for name, t in times.items()}


def main():
    fd.set_num_threads(1)
    rng = np.random.default_rng(0)
    tokens, labels = rng.integers(0, 27, (64, 3)), rng.integers(0, 27, 64)
    x, y = rng.random((32, 784), np.float32), rng.integers(0, 10, 32)
    steps = {}
    for name, rates in (("lm none", None), ("lm hidden", [0.0, 0.1]), ("lm both", [0.1, 0.1])):
        net = EmbeddingMLP(27, 32, 3, [500, 27], "tanh", random_state=0, backend="cython", dropout=rates,
                           dropout_seeds=None if rates is None else [1, 2])
        net.set_optimizer("adam")
        steps[name] = lambda net=net: net.fused_step(tokens, labels, 0)
    for name, rates in (("mlp none", None), ("mlp dropout", [0.0, 0.2, 0.2])):
        net = fd.MLP([784, 128, 64, 10], "relu", random_state=0, backend="cython", dropout=rates,
                     dropout_seeds=None if rates is None else [0, 1, 2])
        net.set_optimizer("adam")
        steps[name] = lambda net=net: net.fused_step(x, y, 0)
    med = median_step_us(steps)
    print("  ".join(f"{name} {us:.1f} µs" for name, us in med.items()))
    print(f"lm hidden/none {med['lm hidden'] / med['lm none']:.3f}, lm both/none {med['lm both'] / med['lm none']:.3f}, "
          f"mlp dropout/none {med['mlp dropout'] / med['mlp none']:.3f}")


if __name__ == "__main__":
    main()
