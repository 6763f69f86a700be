"""Backend selection, thread settings and import hygiene of the public API."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends


def test_required_backends_are_available():
    """CI sets FUSEDENSE_REQUIRE_BACKENDS=cython,numba so a broken build cannot pass as numpy."""
    required = [n for n in os.environ.get("FUSEDENSE_REQUIRE_BACKENDS", "").split(",") if n]
    for name in required:
        assert name in fd.backends(), f"backend {name!r} is not available"
        assert _backends.load(name).NAME == name, f"backend {name!r} did not load"


def test_numpy_backend_is_always_available():
    assert "numpy" in fd.backends()


def test_use_backend_selects_inside_the_block_and_restores_after():
    before = fd.get_backend()
    with fd.use_backend("numpy"):
        assert fd.get_backend() == "numpy"
    assert fd.get_backend() == before


def test_set_backend_changes_the_default():
    try:
        fd.set_backend("numpy")
        assert fd.get_backend() == "numpy"
    finally:
        fd.set_backend("auto")


@pytest.mark.parametrize("call", [lambda: fd.set_backend("cuda"), lambda: fd.use_backend("tpu").__enter__(),
                                  lambda: fd.dense(np.ones((1, 2)), np.ones((2, 2)), backend="fast")])
def test_unknown_backend_names_the_choices(call):
    with pytest.raises(ValueError, match="backend: unknown backend .* expected 'auto' or one of cython, numba, numpy"):
        call()


def test_set_num_threads_returns_the_previous_value_to_restore():
    original = fd.get_num_threads()
    previous = fd.set_num_threads(1)
    try:
        assert previous == original and fd.get_num_threads() == 1
    finally:
        fd.set_num_threads(original)
    assert fd.get_num_threads() == original


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_set_num_threads_rejects_non_positive_integers(bad, error):
    with pytest.raises(error, match=r"n: expected (a positive integer|an integer in \[1, )"):
        fd.set_num_threads(bad)


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, check=True).stdout.strip()


def test_import_does_not_import_numba_or_optional_packages():
    out = _run("import sys, fusedense; print(sorted(m for m in ('numba', 'torch', 'sklearn', 'matplotlib', "
               "'scipy.special', 'onnxruntime', 'jax') if m in sys.modules))")
    assert out == "[]"


def test_backend_environment_variable_sets_the_default():
    assert _run("import fusedense; print(fusedense.get_backend())", FUSEDENSE_BACKEND="numpy") == "numpy"


def test_thread_environment_variable_sets_the_default():
    assert _run("import fusedense; print(fusedense.get_num_threads())", FUSEDENSE_NUM_THREADS="1") == "1"


def test_list_inputs_are_accepted_and_return_arrays():
    y = fd.dense([[1.0, -2.0]], [[1.0], [1.0]], [0.5], activation="relu")
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    np.testing.assert_array_equal(y, [[0.0]])


def test_leading_batch_dimensions_are_kept(rng):
    x, W = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 5))
    y = fd.dense(x, W, activation="tanh")
    assert y.shape == (2, 3, 5)
    np.testing.assert_allclose(y, np.tanh(x @ W), rtol=1e-12)


def test_out_receives_the_result_even_when_it_aliases_the_input(rng):
    x, W, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4)), rng.normal(size=4)
    expected = fd.dense(x, W, b)
    out = x  # square layer written over its own input
    result = fd.dense(x, W, b, out=out)
    assert result is out
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_out_may_be_a_non_contiguous_view(rng):
    x, W = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    buf = np.zeros((3, 4))
    fd.dense(x, W, activation="identity", out=buf[:, ::2])
    np.testing.assert_allclose(buf[:, ::2], x @ W, rtol=1e-12)
