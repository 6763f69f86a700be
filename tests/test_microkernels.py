"""The cython backend's small-matrix kernels (kernels/microkernels_body.h) on the shapes where
their tiles change: every column count modulo the vector widths (partial last vectors, whose
reads of B's last rows go through a padded copy), batch sizes on each side of the row tiles,
k on each side of the k slice (256), transposed A (dW = xᵀ dz), and every SIMD build the
runtime dispatch can pick (FUSEDENSE_SIMD caps it)."""
import numpy as np
import pytest

from support import assert_close, relu_of, run_in_simd_build

layers = pytest.importorskip(
    "fusedense._kernels.layers", reason="the cython kernels are not built (python setup.py build_ext --inplace)")

DTYPES = [np.float32, np.float64]
BATCHES = [*range(1, 10), 16, 17]  # row tiles of 8 (AVX-512), 6 (AVX2) or 4 rows, then 4, 2, 1
DEPTHS = [1, 31, 33, 257]  # k slices of 256
# every width modulo 32 (a float32 AVX-512 tile) and the wider blocks of a lone row
WIDTHS = [*range(1, 66), 96, 127, 128, 129, 200]


def _check_forward_and_backward(dtype, m, k, n, rng):
    """dense_forward's x @ W + b, and dense_backward's dW = xᵀ dz and dx = dz Wᵀ, against
    float64 products of the same numbers."""
    x = rng.standard_normal((m, k)).astype(dtype)
    W = rng.standard_normal((k, n)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    y = np.full((m, n), np.nan, dtype)
    layers.dense_forward(x, W, b, 0, 0.0, y, None)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    scale = np.sqrt(k)  # rounding grows with the number of terms
    assert_close(y, x64 @ W64 + b, dtype, scale)
    dy = rng.standard_normal((m, n)).astype(dtype)
    dx, dW, db = np.full((m, k), np.nan, dtype), np.full((k, n), np.nan, dtype), np.empty(n, dtype)
    layers.dense_backward(dy, x, W, y, y, 0, 0.0, dx, dW, db)
    assert_close(dW, x64.T @ dy, dtype, np.sqrt(m))
    assert_close(dx, dy.astype(np.float64) @ W64.T, dtype, np.sqrt(n))


def check_every_edge_shape(dtype_name):
    """Every batch x depth x width of this module, for one dtype (also run in subprocesses)."""
    rng = np.random.default_rng(7)
    for m in BATCHES:
        for k in DEPTHS:
            for n in WIDTHS:
                _check_forward_and_backward(np.dtype(dtype_name).type, m, k, n, rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_products_match_float64_at_every_edge_shape(dtype):
    check_every_edge_shape(np.dtype(dtype).name)


@pytest.mark.parametrize("simd", ["generic", "avx2"])
def test_narrower_simd_builds_match_float64_at_every_edge_shape(simd):
    """The SSE2 and AVX2 builds of the kernels, on a CPU that would pick a wider one (their
    partial vectors: element loops, AVX2's masked loads and stores), relu in the product too."""
    run_in_simd_build(simd, "test_microkernels", "check_every_edge_shape", "check_relu_in_the_product")


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_gets_the_same_bits_at_every_batch_size(dtype):
    """Each element is its bias plus the products added in order of k, whatever the tile: a
    row's result does not depend on how many rows come with it, nor on where it sits."""
    rng = np.random.default_rng(3)
    k, n = 300, 75
    x = rng.standard_normal((17, k)).astype(dtype)
    W = rng.standard_normal((k, n)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    alone = np.empty((1, n), dtype)
    layers.dense_forward(x[-1:], W, b, 0, 0.0, alone, None)
    for m in BATCHES:
        y = np.empty((m, n), dtype)
        layers.dense_forward(x[-m:], W, b, 0, 0.0, y, None)
        np.testing.assert_array_equal(y[-1], alone[0])


def check_relu_in_the_product(dtype_name):
    """dense_forward with relu and no z applies the relu as the tiles are written back: the
    same bits as the product followed by the relu, at every edge shape, with NaN, ±inf and
    -0 among the products."""
    dtype = np.dtype(dtype_name).type
    rng = np.random.default_rng(13)
    for m in BATCHES:
        for k in (1, 257):  # one k slice; past it (only the last slice applies the relu)
            # special rows first, so that the last row (the lone-row tile of the remainder)
            # stays finite: row 0 holds an inf (products inf*0 = NaN, +inf, -inf in the first
            # columns), row 1 a NaN
            x = rng.standard_normal((m, k)).astype(dtype)
            x[0, 0] = np.inf if m > 1 else x[0, 0]
            x[1 % m, 0] = np.nan if m > 2 else x[1 % m, 0]
            W = rng.standard_normal((k, max(WIDTHS))).astype(dtype)
            W[0, :3] = (0, 1, -1)
            W[:, 1::3] = -0.0  # products -0 (+ a -0 bias below) in every tile, tails included
            for n in WIDTHS:
                Wn, b = np.ascontiguousarray(W[:, :n]), np.zeros(n, dtype)
                b[::2] = -0.0
                product, y = np.empty((m, n), dtype), np.empty((m, n), dtype)
                layers.dense_forward(x, Wn, b, 0, 0.0, product, None)
                layers.dense_forward(x, Wn, b, 1, 0.0, y, None)
                assert y.tobytes() == relu_of(product).tobytes(), (m, k, n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_applied_in_the_product_matches_the_product_then_relu(dtype):
    check_relu_in_the_product(np.dtype(dtype).name)
