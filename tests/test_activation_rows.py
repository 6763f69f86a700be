"""The cython backend's activation rows (kernels/act_rows_body.h) in every SIMD build the runtime
dispatch can pick (FUSEDENSE_SIMD caps it): every activation × dtype against the NumPy registry,
forward (alone, and with the dense layer's bias add riding in the same loop) and backward (from y
and from z), on row lengths 1..70 (every tail after 16-float and 8-double vectors), with NaN,
±inf and −0.0 mixed in."""

import numpy as np
import pytest

from support import assert_close, assert_passes_with_simd
from fusedense.activations import BY_ID

pytest.importorskip(
    "fusedense._kernels.activations", reason="the cython kernels are not built (python setup.py build_ext --inplace)")
from fusedense._backends import cython_backend as k  # noqa: E402

DTYPES = ["float32", "float64"]
LENGTHS = range(1, 71)
SPECIALS = [np.nan, np.inf, -np.inf, -0.0, 0.0, 40.0, -40.0, 1e-30, -1e-30]
# the dense layer adds its bias in the epilogue (rather than in the micro-kernel) only on the
# BLAS path: at least 8 columns; these widths straddle the vector lengths
BIAS_WIDTHS = [8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70]


def _alpha(act):
    return act.default_alpha if act.has_alpha else 0.0


def _values(rng, shape, dtype):
    """Normal numbers spread over the activations' interesting range, with the special values
    at random places (in vector bodies and in tails alike)."""
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    flat = z.reshape(-1)
    spots = rng.choice(flat.size, size=min(flat.size, len(SPECIALS)), replace=False)
    flat[spots] = np.array(SPECIALS[:spots.size], dtype)
    return z


def _reference_forward(act, z, dtype):
    """The registry's forward in float64, rounded to the dtype once."""
    with np.errstate(all="ignore"):
        return act.forward(z.astype(np.float64), _alpha(act)).astype(dtype)


def _reference_backward(act, dy, z, dtype):
    z64, dy64 = z.astype(np.float64), dy.astype(np.float64)
    with np.errstate(all="ignore"):
        y64 = act.forward(z64, _alpha(act))
        if act.rowwise:  # softmax: dz = y (dy − Σ dy·y); log_softmax: dz = dy − e^y Σ dy
            if act.name == "softmax":
                dz = y64 * (dy64 - (dy64 * y64).sum(axis=1, keepdims=True))
            else:
                dz = dy64 - np.exp(y64) * dy64.sum(axis=1, keepdims=True)
        else:
            dz = dy64 * act.derivative(z64, y64, _alpha(act))
    return dz.astype(dtype)


def _check_forward(act, z, dtype):
    y = np.full_like(z, 7.0)
    k.activation_forward(z, act.id, _alpha(act), y)
    expected = _reference_forward(act, z, dtype)
    assert_close(y, expected, dtype)
    zero = expected == 0  # −0.0 stays −0.0 where the registry keeps it
    if act.name in ("identity", "tanh", "leaky_relu", "gelu"):
        np.testing.assert_array_equal(np.signbit(y[zero]), np.signbit(expected[zero]))
    return y


def _check_backward(act, z, y, dtype, rng):
    dy = rng.standard_normal(z.shape).astype(dtype)
    expected = _reference_backward(act, dy, z, dtype)
    dz = np.full_like(z, 7.0)
    k.activation_backward(dy, z, None, act.id, _alpha(act), dz)
    assert_close(dz, expected, dtype, 4)
    if act.from_output:
        dz = np.full_like(z, 7.0)
        k.activation_backward(dy, None, y, act.id, _alpha(act), dz)
        assert_close(dz, expected, dtype, 4)


def check_rows(dtype_name):
    """Every activation on every row length, forward and backward (also run in subprocesses)."""
    dtype = np.dtype(dtype_name).type
    rng = np.random.default_rng(11)
    for act in BY_ID:
        for n in LENGTHS:
            # element-wise activations treat the batch as one flat run: one row of n is a run of n
            z = _values(rng, (2, n) if act.rowwise else (1, n), dtype)
            y = _check_forward(act, z, dtype)
            _check_backward(act, z, y, dtype, rng)


def check_bias_epilogue(dtype_name):
    """dense_forward's epilogue: bias add and activation in one pass (y alone), or the bias add
    into z and the activation from z (y and z), give the same bits and match the registry."""
    dtype = np.dtype(dtype_name).type
    rng = np.random.default_rng(12)
    for n in BIAS_WIDTHS:
        m = depth = int(np.ceil(np.sqrt((1 << 23) / n)))  # BLAS from 2**23 multiply-adds
        x = rng.standard_normal((m, depth)).astype(dtype)
        W = (rng.standard_normal((depth, n)) / np.sqrt(depth)).astype(dtype)
        b = _values(rng, n, dtype)
        product = x.astype(np.float64) @ W.astype(np.float64)
        for act in BY_ID:
            y_alone, y, z = np.empty((m, n), dtype), np.empty((m, n), dtype), np.empty((m, n), dtype)
            k.dense_forward(x, W, b, act.id, _alpha(act), y_alone, None)
            k.dense_forward(x, W, b, act.id, _alpha(act), y, z)
            with np.errstate(invalid="ignore"):
                assert_close(z, product + b, dtype, np.sqrt(depth))
            assert_close(y, _reference_forward(act, z, dtype), dtype)
            np.testing.assert_array_equal(y_alone, y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_rows_match_the_registry_at_every_length_with_special_values(dtype):
    check_rows(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_epilogue_matches_the_registry_with_or_without_keeping_z(dtype):
    check_bias_epilogue(dtype)


@pytest.mark.parametrize("simd", ["generic", "avx2"])
def test_narrower_simd_builds_of_the_activation_rows_match_the_registry(simd):
    """The SSE2 and AVX2 builds of the rows, on a CPU that would pick a wider one."""
    assert_passes_with_simd(simd, "import test_activation_rows as t\n"
                                  "for dtype in ('float32', 'float64'):\n"
                                  "    t.check_rows(dtype)\n"
                                  "    t.check_bias_epilogue(dtype)")
