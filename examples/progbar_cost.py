"""What the live progress bar costs: one epoch of the seed example on Fashion-MNIST (48k images,
batch 32: 1500 steps) with verbose=1 on a terminal (the bar redrawn in place) against verbose=0,
alternating in one process on one thread; run it in a terminal (or `script -qc` / a pty). On a
noisy machine the epoch ratio drifts by more than the bar costs, so the time spent inside the
bar's redraws (``Progbar.update``, which computes the running logs and writes) is also summed.

    python examples/progbar_cost.py --rounds 7
"""
import argparse
import statistics
import sys
import time

import numpy as np

import fusedense as keras
from fusedense.progbar import Progbar
from fusedense.threads import threads_limited

_inside = [0.0, 0.0, 0]  # wall seconds and this thread's CPU seconds spent in Progbar.update, calls


def _timed(update):
    def timed_update(self, step, logs_fn):
        start, cpu = time.perf_counter(), time.thread_time()
        update(self, step, logs_fn)
        _inside[0] += time.perf_counter() - start
        _inside[1] += time.thread_time() - cpu
        _inside[2] += 1
    return timed_update


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if not sys.stdout.isatty():
        sys.exit("run this in a terminal: the bar is live only there")
    (x, y), _ = keras.datasets.load_fashion_mnist()
    x = (x.reshape(len(x), -1)[:48000] / 255.0).astype(np.float32)
    y = y[:48000]
    model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")],
                             seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = {0: [], 1: []}
    Progbar.update = _timed(Progbar.update)
    with threads_limited(1):
        model.fit(x, y, epochs=1, verbose=0)  # warm-up
        for _ in range(args.rounds):
            for verbose in (1, 0):
                start = time.perf_counter()
                model.fit(x, y, epochs=1, verbose=verbose)
                times[verbose].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times[1], times[0])]
    print(f"\nbackend {model.network.backend}: epoch with the live bar {statistics.median(times[1]):.3f} s, "
          f"without {statistics.median(times[0]):.3f} s; per-round ratios "
          f"{' '.join(f'{r:.3f}' for r in ratios)}, median {statistics.median(ratios):.3f}; inside the bar's "
          f"{_inside[2]} updates in {sum(times[1]):.1f} s of live fits: {_inside[0] * 1e3:.1f} ms wall "
          f"({_inside[0] / sum(times[1]) * 100:.2f}%), {_inside[1] * 1e3:.1f} ms CPU "
          f"({_inside[1] / sum(times[1]) * 100:.3f}%)")


if __name__ == "__main__":
    main()
