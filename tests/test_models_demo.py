"""The `fusedense demo` command and its inference-speed comparison."""
import re
from dataclasses import replace
import subprocess
import sys

import numpy as np
import pytest

import fusedense as fd
from fusedense.cli import demo, main
from fusedense.benchmarking import timing
from fusedense.benchmarking.runner import measure
from fusedense.benchmarking.systems import all_systems
from fusedense.benchmarking.workloads import Problem


def test_demo_trains_reports_accuracy_and_compares_speed(capsys):
    pytest.importorskip("gender_guesser")
    assert main(["demo", "--epochs", "1", "--limit", "2000", "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out and "test accuracy" in out and "maria → " in out
    assert "batch 1 " in out and "batch 32" in out and "batch 1024" in out
    timed = r"\s+\d+\.\d+ [µm]s\s+\d+\.\d\d×"  # one batch size's cell: median time and ratio to NumPy
    for system in [f"fusedense-{backend}-api" for backend in fd.backends()] + ["numpy"]:
        assert re.search(rf"^  {system}({timed}){{3}}\s*$", out, re.MULTILINE), f"no timed row for {system}"
    assert re.search(rf"^  numpy({r'.+? 1.00× '}){{3}}", out, re.MULTILINE)  # NumPy is the baseline


def test_demo_explains_how_to_install_the_names(monkeypatch, capsys):
    def missing(**kwargs):
        raise fd.datasets.DatasetNotFoundError("pip install gender-guesser")

    monkeypatch.setattr(fd.datasets, "load_names", missing)
    assert main(["demo"]) == 1
    assert "pip install gender-guesser" in capsys.readouterr().out


def test_problem_from_trained_weights_expects_the_networks_output():
    net = fd.MLP([12, 8, 6, 3], "relu", "softmax", random_state=0)
    x = np.random.default_rng(0).random((5, 12), dtype=np.float32)
    problem = Problem.from_layers(net.weights, net.activations, x)
    np.testing.assert_allclose(problem.expected(), net.predict(x), rtol=1e-5, atol=1e-6)


def test_every_speed_system_gives_the_networks_output():
    net = fd.MLP([12, 8, 6, 3], "relu", "softmax", random_state=0)
    x_pool = np.random.default_rng(0).random((5, 12), dtype=np.float32)
    rows = demo.speed_rows(net, x_pool, batch_sizes=(3,), samples=1)[3]
    assert {row["status"] for row in rows.values()} == {"ok"}
    assert {f"fusedense-{backend}-api" for backend in fd.backends()} | {"numpy"} <= set(rows)


def test_every_speed_system_gives_the_networks_output_on_sparse_rows():
    import scipy.sparse as sp

    net = fd.MLP([300, 8, 3], "relu", "softmax", random_state=0)
    x_pool = sp.random(5, 300, density=0.05, format="csr", random_state=0, dtype=np.float32)
    problem = Problem.from_layers(net.weights, net.activations, x_pool)
    assert problem.sparse and problem.flops() == 2.0 * (x_pool.nnz * 8 + 5 * 8 * 3)
    np.testing.assert_allclose(problem.expected(), net.predict(x_pool), rtol=1e-5, atol=1e-6)
    systems = [system for system in all_systems() if not system.missing()]  # (peers installed here)
    rows = {row["system"]: row for row in measure(problem, systems, 1, replace(timing.QUICK, samples=1))}
    assert {f"fusedense-{backend}{api}" for backend in fd.backends() for api in ("", "-api")} | {"numpy"} <= set(rows)
    for name, row in rows.items():  # right, or a system that says it takes no sparse input
        assert row["status"] == "ok" or "sparse inputs" in row["status"] or "dense inputs" in row["status"], \
            (name, row["status"])
    assert demo.speed_rows(net, x_pool, batch_sizes=(7,), samples=1)[7]["numpy"]["status"] == "ok"


def test_unknown_subcommand_exits_with_usage(capsys):
    with pytest.raises(SystemExit):
        main(["nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_demo_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--threads", "0"])
    assert "argument --threads: expected a thread count in [1, " in capsys.readouterr().err


def test_python_dash_m_fusedense_is_the_command():
    result = subprocess.run([sys.executable, "-m", "fusedense", "--help"], capture_output=True, text=True, check=True)
    assert all(command in result.stdout for command in ("demo", "bench", "lm"))
