"""One-thread A/B of the Cython packed product (gemm_packed) on a busy machine.

Wall-clock times on the shared 2-core VM moved by 2x between rounds (load average 4-6): a
process that waits for its core counts the wait. This script times the *thread's CPU time*
(time.thread_time, the minimum of 5 batches), which a wait for the core does not inflate
(sharing caches and memory bandwidth still does), and alternates what it compares:

  builds: two or more builds of fusedense._kernels.layers (directories holding a
          layers.cpython-*.so, e.g. a copy of main's and of a branch's), each in its own
          process, the order rotated every round; prints each build's median time relative to
          the first build's in the same round.
          python bench/packed_product_ab.py builds "64 1024 4096" 10 /tmp/main-kernels src/fusedense/_kernels
  ort:    the installed kernels against ONNX Runtime's MatMul + Add (intra-op threads 1, so it
          runs on the calling thread) in one process, alternating; prints ORT time / fd time.
          python bench/packed_product_ab.py ort 5

The product is dense_forward(x, W, b, identity) with x (M, K) and W (K, N) float32: the packed
path for 16-256 rows and W of 4 MiB or more.
"""
import glob
import importlib.util
import subprocess
import sys
import time

import numpy as np

SHAPES = [(64, 1024, 1024), (64, 1024, 4096), (64, 4096, 1024)]  # dense b64, the FFN's two at b64


def load_layers(directory):
    """fusedense._kernels.layers from the build in `directory`."""
    path = glob.glob(f"{directory}/layers.cpython*.so")[0]
    spec = importlib.util.spec_from_file_location("layers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.set_num_threads(1)
    return module


def operands(m, k, n):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, k)).astype(np.float32)
    W = (rng.standard_normal((k, n)) * 0.03).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    return x, W, b


def cpu_time(call, reps, batches=5):
    """Least thread CPU time per call over `batches` batches of `reps` calls."""
    best = float("inf")
    for _ in range(batches):
        start = time.thread_time()
        for _ in range(reps):
            call()
        best = min(best, (time.thread_time() - start) / reps)
    return best


def one_build(directory, m, k, n):
    """(child process) this build's time, after checking its answer against float64."""
    layers = load_layers(directory)
    x, W, b = operands(m, k, n)
    y = np.empty((m, n), np.float32)
    layers.dense_forward(x, W, b, 0, 0.0, y, None)
    assert np.abs(y - (x.astype(np.float64) @ W + b)).max() < 1e-3
    print(cpu_time(lambda: layers.dense_forward(x, W, b, 0, 0.0, y, None), max(3, int(3e8 / (m * k * n)))))


def builds(shape, rounds, directories):
    m, k, n = map(int, shape.split())
    times = {d: [] for d in directories}
    for r in range(rounds):
        for d in directories[r % len(directories):] + directories[:r % len(directories)]:
            out = subprocess.run([sys.executable, __file__, "one", d, str(m), str(k), str(n)],
                                 capture_output=True, text=True, check=True).stdout
            times[d].append(float(out))
    for d in directories:
        ratio = np.median(np.array(times[d]) / np.array(times[directories[0]]))
        print(f"{m}x{k}x{n} {d}: best {min(times[d]) * 1e6:.0f} us "
              f"({2 * m * k * n / min(times[d]) / 1e9:.1f} GFLOP/s), time / first build's, median {ratio:.3f}")


def ort_session(W, b):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    k, n = W.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def against_ort(rounds):
    from fusedense._kernels import layers
    layers.set_num_threads(1)
    for m, k, n in SHAPES:
        x, W, b = operands(m, k, n)
        y = np.empty((m, n), np.float32)
        session = ort_session(W, b)
        fd_call = lambda: layers.dense_forward(x, W, b, 0, 0.0, y, None)  # noqa: E731
        ort_call = lambda: session.run(None, {"x": x})  # noqa: E731
        fd_call()
        np.testing.assert_allclose(y, ort_call()[0], rtol=1e-3, atol=1e-3)
        reps = max(1, int(1e8 / (m * k * n)))
        fd_t, ort_t = [], []
        for _ in range(rounds):
            fd_t.append(cpu_time(fd_call, reps, 3))
            ort_t.append(cpu_time(ort_call, reps, 3))
        print(f"{m}x{k}x{n}: fd {min(fd_t) * 1e6:.0f} us, ORT {min(ort_t) * 1e6:.0f} us, "
              f"ORT time / fd time, median {np.median(np.array(ort_t) / np.array(fd_t)):.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "one":
        one_build(sys.argv[2], *map(int, sys.argv[3:6]))
    elif sys.argv[1] == "builds":
        builds(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    else:
        against_ort(int(sys.argv[2]) if len(sys.argv) > 2 else 5)
