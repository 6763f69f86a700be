"""Does a fusedense call leave threads spinning that slow the next library down? A NumPy
1024 x 1024 float32 GEMM on 2 threads, timed right after each of a few fusedense calls on 2
threads, against the same GEMMs in a process that never loads fusedense; each case alone in its
own process, the processes alternated over rounds (docs/performance-notes.md, "One pool").

    python bench/after_call.py --rounds 7
    python bench/after_call.py --env GOMP_SPINCOUNT=300000    # libgomp's own default spin
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
call, reps = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
a, b = rng.random((1024, 1024), "f4"), rng.random((1024, 1024), "f4")
run = lambda: None
if call != "none":
    import fusedense as fd
    fd.set_num_threads(2)
    batch, kind = {"dense_b64": (64, "dense"), "dense_b1024": (1024, "dense"), "ffn_b1": (1, "ffn"),
                   "mlp_b1024": (1024, "mlp"), "train_b32": (32, "train")}[call]
    x = rng.random((batch, 784 if kind in ("mlp", "train") else 1024), "f4")
    if kind == "dense":
        W = rng.random((1024, 1024), "f4") / 32
        run = lambda: fd.dense(x, W, activation="relu")
    else:
        sizes, acts = {"ffn": ([1024, 4096, 1024], ["gelu", "identity"]),
                       "mlp": ([784, 128, 64, 10], ["relu", "relu", "softmax"]),
                       "train": ([784, 128, 64, 10], ["relu", "relu", "softmax"])}[kind]
        net = fd.MLP(sizes, activations=acts, random_state=0)
        if kind == "train":
            net.set_optimizer("adam")
            labels = rng.integers(0, 10, batch)
            run = lambda: net.fused_step(x, labels, 0)
        else:
            out = np.empty((batch, sizes[-1]), "f4")
            run = lambda: net.forward(x, out)
with threadpool_limits(2, user_api="blas"):
    a @ b, run(), a @ b  # warm: pools started, pages touched
    times = []
    for _ in range(reps):
        run()
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times)))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--calls", default="dense_b64,ffn_b1,mlp_b1024,train_b32,dense_b1024")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the fusedense processes")
    args = parser.parse_args()
    cases = ["none", *args.calls.split(",")]
    env = dict(os.environ, **dict(item.split("=", 1) for item in args.env))
    times = {case: [] for case in cases}
    for r in range(args.rounds):
        for case in cases[r % len(cases):] + cases[:r % len(cases)]:
            done = subprocess.run([sys.executable, "-c", CHILD, case, str(args.reps)], capture_output=True,
                                  text=True, env=env, check=True)
            times[case].append(json.loads(done.stdout))
    print(f"NumPy 1024² float32 GEMM, 2 threads, ms (median of {args.rounds} processes' medians of "
          f"{args.reps}); ratio = time after the call / time without fusedense, median of same-round ratios"
          + (f"; {' '.join(args.env)}" if args.env else ""))
    for case in cases:
        ratio = statistics.median(t / n for t, n in zip(times[case], times["none"]))
        print(f"{case:12s} {1e3 * statistics.median(times[case]):7.2f} ms  x{ratio:.3f}")


if __name__ == "__main__":
    main()
