"""Dense forward ``y = act(x @ W + b)`` per activation and shape (shapes: conftest's grid)."""
from fusedense.benchmarking.workloads import dense_workload

# full grid: a cheap, a transcendental, a from-output and a row-wise activation
GRID = {"activation": (["relu", "gelu"], ["relu", "gelu", "sigmoid", "softmax"])}


def test_dense_forward(benchmark, prepared, system, shape, activation, dtype):
    batch, n_in, n_out = shape
    run = prepared(dense_workload(n_in, n_out, activation).problem(batch, dtype))
    benchmark.group = f"dense_forward {activation} B={batch} {n_in}x{n_out} {dtype.__name__}"
    benchmark(run)
