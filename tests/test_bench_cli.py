"""`fusedense bench` on tiny workloads: table, JSON, plot, missing peers, wrong answers; and every
installed system's adapter against the reference (the same check the CLI does before timing)."""
import json

import numpy as np
import pytest

import fusedense as fd
from fusedense import cli
from fusedense.benchmarking import systems
from fusedense.benchmarking.workloads import CHECK_TOLERANCE, MLP, TRAIN, check_error, dense_workload

TINY = ["--quick", "--workload", "dense", "--dense-shape", "8x4", "--batch", "1,3",
        "--systems", "numpy,fusedense-numpy,fusedense-numpy-api"]


def run_bench(capsys, *extra):
    assert cli.main(["bench", *TINY, *extra]) == 0
    return capsys.readouterr().out


def test_bench_prints_a_table_row_per_system_and_batch(capsys):
    out = run_bench(capsys)
    assert "| batch | system | median µs |" in out
    for batch in (1, 3):
        for system in ("numpy", "fusedense-numpy", "fusedense-numpy-api"):
            assert f"| {batch} | {system} |" in out


def test_bench_json_records_machine_settings_and_results(capsys, tmp_path):
    path = tmp_path / "bench.json"
    run_bench(capsys, "--json", str(path))
    report = json.loads(path.read_text())
    assert report["machine"]["peak_gflops"] > 0
    assert report["settings"]["dtype"] == "float32"
    assert {(r["batch"], r["system"]) for r in report["results"]} == {
        (b, s) for b in (1, 3) for s in ("numpy", "fusedense-numpy", "fusedense-numpy-api")}
    for row in report["results"]:
        assert row["status"] == "ok"
        assert row["median_us"] > 0 and len(row["samples_us"]) == 5 and row["gflops"] > 0
    assert all(r["speedup_vs_numpy"] == 1.0 for r in report["results"] if r["system"] == "numpy")


def test_bench_plot_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    run_bench(capsys, "--plot", str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_peer_is_listed_as_not_installed(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(systems.Jax, "module", "fusedense_no_such_peer")
    path = tmp_path / "bench.json"
    out = run_bench(capsys, "--systems", "numpy,jax", "--json", str(path))
    assert "jax (not installed)" in out
    assert json.loads(path.read_text())["missing"] == {"jax": "not installed"}


def test_wrong_answer_is_reported_and_not_timed(capsys, monkeypatch, tmp_path):
    def wrong(self, problem, threads):
        out = np.zeros((problem.x.shape[0], problem.workload.sizes[-1]), problem.x.dtype)
        return (lambda: None), (lambda: out + 1)
    monkeypatch.setattr(systems.FusedenseKernel, "prepare", wrong)
    path = tmp_path / "bench.json"
    out = run_bench(capsys, "--json", str(path))
    assert "**wrong answer" in out
    rows = [r for r in json.loads(path.read_text())["results"] if r["system"] == "fusedense-numpy"]
    assert rows and all(r["status"].startswith("wrong answer") and "median_us" not in r for r in rows)


def test_training_flops_count_forward_and_both_backward_products():
    forward = MLP.flops(32)
    assert forward == 2 * 32 * (784 * 128 + 128 * 64 + 64 * 10)
    assert TRAIN.flops(32) == 2 * forward + 2 * 32 * (128 * 64 + 64 * 10)  # no dx for the input layer


def _installed(system):
    if system.missing():
        pytest.skip(f"{system.name} is not installed")
    return system


@pytest.mark.parametrize("workload", [dense_workload(16, 8, "gelu"), MLP, TRAIN], ids=lambda w: w.name)
@pytest.mark.parametrize("system", systems.all_systems(), ids=lambda s: s.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_every_system_matches_the_reference(system, workload, dtype):
    system = _installed(system)
    problem = workload.problem(3, dtype)
    try:
        run, result = system.prepare(problem, threads=1)
    except systems.NotSupported:
        return  # e.g. ONNX Runtime does not train: the CLI lists it as n/a
    run()
    assert check_error(result(), problem.expected()) <= CHECK_TOLERANCE[np.dtype(dtype)]


@pytest.mark.parametrize("system", [s for dtype in systems.QUANTIZED_DTYPES for s in systems.all_systems(dtype)],
                         ids=lambda s: s.name)
def test_every_quantized_comparison_system_is_near_the_float_reference(system):
    """The quantized systems (and the float ones beside them) against the float32 reference, within
    the quantized tolerance — and not exactly equal to it: they do compute with quantized numbers."""
    system = _installed(system)
    problem = MLP.problem(5, np.float32)
    try:
        run, result = system.prepare(problem, threads=1)
    except systems.NotSupported:
        return  # ONNX Runtime has no bf16 dynamic quantization
    run()
    error = check_error(result(), problem.expected())
    limit = CHECK_TOLERANCE[np.dtype(np.float32)] if system.tolerance is None else system.tolerance
    assert error <= limit
    if system.tolerance is not None:
        assert error > 1e-6


def test_bench_quantized_lists_the_quantized_systems(capsys):
    args = ["bench", "--quick", "--quantized", "int8", "--workload", "dense", "--dense-shape", "16x8",
            "--batch", "2", "--systems", "numpy,fusedense-numba-int8,fusedense-cython-int8"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    for system in ("numpy", *(f"fusedense-{engine}-int8" for engine in ("numba", "cython")
                              if engine in fd.backends())):
        assert f"| 2 | {system} |" in out


def test_bench_quantized_refuses_training_and_float64(capsys):
    for extra in (["--workload", "train"], ["--dtype", "float64"]):
        with pytest.raises(SystemExit):
            cli.main(["bench", "--quantized", "int8", *extra])
