"""Shared pieces of the pytest-benchmark suites (one file per op).

Every benchmark is parametrized over ``system``: each backend in ``fd.backends()`` — its kernel
called directly with pre-validated, preallocated arrays, the steady-state cost — and
``numpy_user``, the NumPy code a user would write (:mod:`fusedense.benchmarking.numpy_user`).
Every benchmark checks its answer against :mod:`fusedense.reference` before timing.

    pytest bench/ --benchmark-disable                            # each benchmark once, as a test
    pytest bench/ --benchmark-only --benchmark-group-by=group    # one table per op and shape
    pytest bench/ --benchmark-only --bench-full                  # batches 1…4096, widths 64…4096

A module declares its parameter grid as ``GRID = {name: (small values, full values)}``; the small
grid is the default so that CI can run everything once in seconds; ``--bench-full`` (or
``FUSEDENSE_BENCH_FULL=1``) selects the full one.
"""
import os

import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends
from fusedense.benchmarking.systems import FusedenseKernel, NumpyUser
from fusedense.benchmarking.workloads import CHECK_TOLERANCE, check_error

SYSTEMS = [*fd.backends(), "numpy_user"]

#: Dense-layer shapes (batch, in, out), batches 1…4096 and widths 64…4096 in the full grid;
#: 4096³ is left out: it is BLAS-bound and takes seconds per call (`fusedense bench` covers GEMMs).
_FULL_SHAPES = [(batch, width, width) for batch in (1, 32, 256, 4096) for width in (64, 512, 4096)
                if batch * width < 4096 * 4096] + [(32, 784, 128)]

#: Grid entries every module gets unless it declares its own.
DEFAULT_GRID = {
    "dtype": ([np.float32], [np.float32, np.float64]),
    "shape": ([(1, 64, 64), (32, 784, 128), (256, 512, 512)], _FULL_SHAPES),
}


def pytest_addoption(parser):
    parser.addoption("--bench-full", action="store_true",
                     help="fusedense benchmarks: the full grid of shapes, activations and dtypes")


def _full(config):
    return config.getoption("--bench-full") or os.environ.get("FUSEDENSE_BENCH_FULL") == "1"


def _id(value):
    if isinstance(value, type):
        return np.dtype(value).name
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def pytest_generate_tests(metafunc):
    if "system" in metafunc.fixturenames:
        metafunc.parametrize("system", SYSTEMS)
    grid = {**DEFAULT_GRID, **getattr(metafunc.module, "GRID", {})}
    for name, (small, full) in grid.items():
        if name in metafunc.fixturenames:
            values = full if _full(metafunc.config) else small
            metafunc.parametrize(name, values, ids=[_id(v) for v in values])


def assert_matches(actual, expected):
    """The pre-timing check: ``actual`` equals the reference within the dtype's tolerance."""
    expected = np.asarray(expected)
    error, tolerance = check_error(actual, expected), CHECK_TOLERANCE[expected.dtype]
    assert error <= tolerance, f"max error {error:.2e} of the largest expected value exceeds {tolerance:.0e}"


@pytest.fixture
def kernels(system):
    """The bare engine module for ``system`` (None for numpy_user): the kernels alone, timed
    without the gate's checks (the arguments here are built right)."""
    if system == "numpy_user":
        return None
    module = _backends.load_engine(system)
    assert module.NAME == system, f"backend {system!r} is listed but did not load"  # no silent fallback
    return module


@pytest.fixture
def prepared(system, kernels):
    """``prepared(problem)``: the system's one-call ``run`` for a benchmarking Problem, run once
    and checked against the reference (the output, or the parameters after one training step)."""
    def prepare(problem):
        runner = NumpyUser() if kernels is None else FusedenseKernel(system)
        run, result = runner.prepare(problem, fd.get_num_threads())
        run()
        assert_matches(result(), problem.expected())
        return run
    return prepare


@pytest.fixture
def check():
    """The pre-timing check for benchmarks that build their own arrays."""
    return assert_matches
