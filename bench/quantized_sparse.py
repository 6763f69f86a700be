"""Inference speed of a quantized sparse first layer: fd.TextClassifier on fortunes language ID
(bench/quantized_accuracy.py's setup: 2^20 buckets, dim 32, 8 languages) as float32 and
fd.quantize(..., sparse_input=True) int8 / bf16, the network's predict on CSR test rows, 1
thread, 15 alternating rounds (median; the float32 model first in each round).

    python bench/quantized_sparse.py
"""
import time

import numpy as np

import fusedense as fd
from quantized_accuracy import fortunes


def main(batches=(1, 64, 4700), rounds=15):
    fd.set_num_threads(1)
    clf, _, x_test, _ = fortunes()
    net = clf.network_
    models = {"float32": net, "int8": fd.quantize(net, "int8", sparse_input=True),
              "bf16": fd.quantize(net, "bf16", sparse_input=True)}
    print("bytes of the network: " + ", ".join(
        f"{name} {(m.params.nbytes if name == 'float32' else m.nbytes) / 2**20:.0f} MiB" for name, m in models.items()))
    for batch in batches:
        x, calls = x_test[:batch], 200 if batch == 1 else 5
        seconds = {name: [] for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                for _ in range(calls):
                    model.predict(x)
                seconds[name].append((time.perf_counter() - start) / calls)
        base = np.median(seconds["float32"])
        print(f"batch {batch}: " + ", ".join(f"{name} {np.median(s) * 1e6:.0f} µs ({base / np.median(s):.2f}x)"
                                             for name, s in seconds.items()), flush=True)


if __name__ == "__main__":
    main()
