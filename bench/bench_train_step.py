"""One training step: forward, sparse softmax cross-entropy, backward, Adam — the backend's
``mlp_train_step`` against hand-written NumPy backprop + Adam."""
from fusedense.benchmarking.workloads import TRAIN, Workload

NETS = {
    "mnist": TRAIN,  # 784-128-64-10
    "wide": Workload("wide", "784-1024-1024-10", (784, 1024, 1024, 10), ("relu", "relu", "softmax"), (),
                     train=True),
}
GRID = {
    "batch": ([32], [32, 256, 4096]),
    "net": (["mnist"], list(NETS)),
}


def test_train_step(benchmark, prepared, system, net, batch, dtype):
    run = prepared(NETS[net].problem(batch, dtype))  # checks the parameters after one step
    benchmark.group = f"train_step {net} B={batch} {dtype.__name__}"
    benchmark(run)
