"""The cython backend's packed product (gemm_packed in kernels/microkernels_body.h), which
dense_forward and mlp_forward take for a large W (at least 4 MiB) at 16-256 rows on one thread:
W is copied in k slices of 256 rows (1024 on AVX2) x column chunks (256 float32 / 128 float64
columns on AVX-512, 1024 / 512 on SSE2, 256 / 128 on AVX2: PACKED_CHUNK_BYTES) cut into strips
two vectors wide, x in groups of 8 (AVX-512), 6 (AVX2) or 4 (SSE2) rows; while a chunk's strips
are computed, the next chunk (the next columns, or the next slice's first ones) is prefetched.
The shapes here cross each of those boundaries (k around 256 and 1024, n around a chunk and
modulo a strip, every row count modulo a group), in every SIMD build the runtime dispatch can
pick (FUSEDENSE_SIMD caps it)."""

import numpy as np
import pytest

import fusedense as fd
from fusedense import activations, reference
from support import assert_close, record, relu_of, run_in_simd_build

layers = pytest.importorskip(
    "fusedense._kernels.layers", reason="the cython kernels are not built (python setup.py build_ext --inplace)")

PACKED_MIN_ELEMENTS = {"float32": 1 << 20, "float64": 1 << 19}  # W of 4 MiB
# (k, n): one k slice short of / past 256 or 1024 with a partial last strip; n crossing a
# column chunk of either dtype with a partial strip; many slices ending in a single row with a
# narrow n
DEPTH_WIDTH = {
    "float32": [(1025, 1025), (1023, 1031), (255, 4129), (4097, 257), (257, 4097)],
    "float64": [(1025, 513), (1023, 517), (255, 2065), (2049, 257)],
}
BATCHES = [*range(16, 33), 63, 256]  # every remainder of a group of 8, 6 or 4 rows


@pytest.fixture(autouse=True)
def one_thread():
    """The packed path is the single-threaded one (with more threads BLAS shares out rows)."""
    previous = layers.get_num_threads()
    layers.set_num_threads(1)
    yield
    layers.set_num_threads(previous)


def check_packed_shapes(dtype_name):
    """dense_forward at every shape of this module against float64 products of the same
    numbers, and each row bit-identical to that row computed alone (batch 1: the in-place
    micro-kernel), so the packed copies change nothing in the arithmetic; with relu, the
    product's bits then relu."""
    layers.set_num_threads(1)  # the packed path is the one-thread one (in-process, one_thread restores)
    dtype = np.dtype(dtype_name).type
    rng = np.random.default_rng(11)
    for k, n in DEPTH_WIDTH[dtype_name]:
        assert k * n >= PACKED_MIN_ELEMENTS[dtype_name]
        W = rng.standard_normal((k, n)).astype(dtype)
        b = rng.standard_normal(n).astype(dtype)
        x = rng.standard_normal((max(BATCHES), k)).astype(dtype)
        expected = x.astype(np.float64) @ W.astype(np.float64) + b
        alone = np.empty((1, n), dtype)
        for m in BATCHES:
            y = np.full((m, n), np.nan, dtype)
            layers.dense_forward(x[:m], W, b, 0, 0.0, y, None)
            assert_close(y, expected[:m], dtype, np.sqrt(k))
            for r in {0, m - 1}:
                layers.dense_forward(x[r:r + 1], W, b, 0, 0.0, alone, None)
                np.testing.assert_array_equal(y[r], alone[0])
            if m in (16, 17, 31, 256):  # relu as the packed tiles (groups, remainders) are written back
                y_relu = np.empty_like(y)
                layers.dense_forward(x[:m], W, b, 1, 0.0, y_relu, None)
                assert y_relu.tobytes() == relu_of(y).tobytes(), m


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_packed_products_match_float64_and_the_unpacked_bits(dtype):
    check_packed_shapes(dtype)


@pytest.mark.parametrize("simd", ["generic", "avx2"])
def test_narrower_simd_builds_of_the_packed_product_match(simd):
    """The SSE2 and AVX2 builds (groups of 4 and 6 rows, narrower strips) on a CPU that would pick a
    wider one."""
    run_in_simd_build(simd, "test_packed_gemm", "check_packed_shapes")


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_dense_forward_over_a_large_weight_keeps_z_and_matches_the_reference(act):
    """The epilogue (bias already in the accumulators, then the activation) after the packed
    product, with z kept as in training."""
    spec = activations.get_activation(act)
    rng = np.random.default_rng(5)
    k, n, m = 1024, 1100, 40
    x = rng.standard_normal((m, k)).astype(np.float32)
    W = (rng.standard_normal((k, n)) / 32).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    y, z = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    layers.dense_forward(x, W, b, spec.id, 0.0, y, z)
    y_ref, z_ref = reference.dense_forward(x, W, b, spec, 0.0)
    assert_close(z, z_ref, np.float32, np.sqrt(k))
    assert_close(y, y_ref, np.float32, np.sqrt(k))


@pytest.mark.parametrize("batch", [16, 64, 300])  # 300: past the packed path's 256 rows (BLAS)
def test_network_forward_with_large_weights_matches_the_reference(batch):
    """mlp_forward's row blocks (256 rows, BLAS-sized weights) through the packed product."""
    sizes, acts = [1024, 1040, 1030, 10], ["gelu", "relu", "softmax"]
    layout, alphas, n_params = fd.make_layout(sizes, acts)
    rng = np.random.default_rng(6)
    params = np.empty(n_params, np.float32)
    for W, b in fd.layer_views(params, layout):
        W[...] = rng.standard_normal(W.shape) / np.sqrt(W.shape[0])
        b[...] = rng.standard_normal(b.shape) * 0.1
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    out = np.empty((batch, sizes[-1]), np.float32)
    layers.mlp_forward(x, params, record(layout, alphas), out)
    assert_close(out, reference.mlp_forward(x, params, record(layout, alphas)), np.float32, np.sqrt(sizes[0]))
