"""Whole-network inference over a flat parameter buffer (one ``mlp_forward`` call)."""
from fusedense.benchmarking.workloads import FFN, MLP, Workload

NETS = {
    "mnist": MLP,  # 784→128 relu→64 relu→10 softmax
    "ffn": FFN,  # 1024→4096 gelu→1024
    "narrow": Workload("narrow", "64-wide, 4 layers", (64, 64, 64, 64, 64), ("relu", "relu", "relu", "identity"), ()),
}
GRID = {
    "batch": ([1, 32], [1, 32, 256, 4096]),
    "net": (["mnist"], list(NETS)),
}


def test_mlp_forward(benchmark, prepared, system, net, batch, dtype):
    run = prepared(NETS[net].problem(batch, dtype))
    benchmark.group = f"mlp_forward {net} B={batch} {dtype.__name__}"
    benchmark(run)
