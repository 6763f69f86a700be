"""The compiled Adam update (kernels/optimizers_body.h) in every SIMD build the runtime dispatch
can pick (FUSEDENSE_SIMD caps it): float32 on AVX-512 divides by a reciprocal estimate
refined by a Newton step; float64, AVX2 and the generic build are exact. Checked against
fusedense.reference with edge values (v = 0, near-denormal and huge moments, NaN and infinities,
every vector tail); the training step's update against the optimizer kernels run on its gradient."""
import numpy as np
import pytest

from fusedense import abi, reference
from fusedense.layout import make_layout

from support import assert_close, make_hyper, run_in_simd_build, record

optim = pytest.importorskip(
    "fusedense._kernels.optim", reason="the cython kernels are not built (python setup.py build_ext --inplace)")
from fusedense._kernels import layers  # noqa: E402 - built together with optim

DTYPES = ["float32", "float64"]
LENGTHS = [*range(1, 18), 31, 32, 33, 1001]  # every tail of a 16-float (AVX-512) or 8-float vector


def _edge_values(dtype, rng, n):
    """p, g, m, v with the values an update must survive: v = 0 (a gradient that stopped),
    v near the smallest normal number and near the largest, tiny and huge gradients."""
    p = rng.standard_normal(n)
    g = rng.standard_normal(n) * 10.0 ** rng.integers(-20, 10, n)
    m = rng.standard_normal(n) * 0.1
    v = rng.random(n) * 10.0 ** rng.integers(-30, 30, n)
    tiny, huge = np.finfo(dtype).tiny, np.finfo(dtype).max
    v[::4], g[::8] = 0.0, 0.0
    v[1::9], v[2::11] = 4 * tiny, huge * 1e-4
    return [np.asarray(a).astype(dtype) for a in (p, g, m, v)]


def _adam(p, g, m, v, eps=1e-8, weight_decay=0.0, decoupled=False, reference_dtype=np.float64,
          lr=1e-3):
    """The kernel on copies, and the reference on the same numbers (in float64 unless asked)."""
    got = [a.copy() for a in (p, m, v)]
    optim.adam_step(got[0], g, got[1], got[2], 3, lr, 0.9, 0.999, eps, weight_decay, decoupled)
    want = [a.astype(reference_dtype) for a in (p, g, m, v)]
    reference.adam_step(*want, 3, lr, 0.9, 0.999, eps, weight_decay, decoupled)
    return got, [want[0], want[2], want[3]]


def _flushed(moment, dtype):
    """The reference's moment with the kernels' flush of denormals to zero."""
    return np.where(np.abs(moment) < np.finfo(dtype).tiny, 0.0, moment)


def check_adam_against_reference(dtype_name):
    """Every length, edge values, Adam and AdamW (also run in subprocesses). With lr = 1 the
    update is as large as the parameters, so the tolerance bounds its relative error (float32
    rounding of m and v alone reaches ~7e-6 against the float64 reference; the reciprocal
    estimate left unrefined would be off by 6e-5 with AVX-512)."""
    dtype = np.dtype(dtype_name).type
    rng = np.random.default_rng(11)
    update_tol = 2e-5 if dtype == np.float32 else 1e-12
    for n in LENGTHS:
        for weight_decay, decoupled in [(0.0, False), (0.01, False), (0.01, True)]:
            p, g, m, v = _edge_values(dtype, rng, n)
            (p1, m1, v1), (p_ref, m_ref, v_ref) = _adam(p, g, m, v, 1e-8, weight_decay, decoupled, lr=1.0)
            # relative to the larger of p and its update (p − update may cancel)
            scale = np.abs(p) + np.abs(p_ref - p)
            assert np.all(np.abs(p1 - p_ref) <= update_tol * scale), np.max(np.abs(p1 - p_ref) / scale)
            assert_close(m1, _flushed(m_ref, dtype), dtype)
            np.testing.assert_allclose(v1, _flushed(v_ref, dtype), rtol=2e-5 if dtype == np.float32 else 1e-12)
    check_adam_special_values(dtype_name)


def check_adam_special_values(dtype_name):
    """NaN and infinities in any input come out where the reference puts them, next to ordinary
    lanes of the same vector; ε below the normal range (the kernel's exact loop) too."""
    dtype = np.dtype(dtype_name).type
    n = 40
    p, g = np.linspace(-1, 1, n).astype(dtype), np.linspace(2, -2, n).astype(dtype)
    m, v = np.full(n, 0.05, dtype), np.full(n, 0.5, dtype)
    p[3], g[5], m[7], v[9] = np.nan, np.nan, np.nan, np.nan
    p[20], g[22], m[24], v[26] = np.inf, -np.inf, np.inf, np.inf
    g[30] = np.finfo(dtype).max  # g² overflows: v = inf, the update 0
    with np.errstate(invalid="ignore", over="ignore"):
        for eps in (1e-8, 1e-40):  # the reference in dtype: it overflows where the kernel does
            (p1, m1, v1), (p_ref, m_ref, v_ref) = _adam(p, g, m, v, eps, reference_dtype=dtype)
            np.testing.assert_array_equal(np.isnan(p1), np.isnan(p_ref))
            np.testing.assert_array_equal(np.isinf(p1), np.isinf(p_ref))
            assert_close(p1, p_ref, dtype)
            assert_close(m1, m_ref, dtype)
            assert_close(v1, v_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_matches_reference_at_every_length_and_edge_value(dtype):
    check_adam_against_reference(dtype)


@pytest.mark.parametrize("simd", ["generic", "avx2"])
def test_narrower_simd_builds_of_adam_match_reference(simd):
    """The SSE2 and AVX2 builds (both exact), on a CPU that would pick a wider one."""
    run_in_simd_build(simd, "test_adam_kernels", "check_adam_against_reference")


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_result_of_an_element_does_not_depend_on_where_it_sits(dtype):
    """Whether an element falls in a full vector or the tail, and whatever its
    neighbours (NaN included), its update is the same bits."""
    rng = np.random.default_rng(5)
    p, g, m, v = _edge_values(np.dtype(dtype).type, rng, 37)
    g[3] = np.nan  # a neighbour that takes the exact formula
    whole, _ = _adam(p, g, m, v)
    for start in range(0, 37, 5):
        for stop in (start + 1, start + 7, 37):
            piece, _ = _adam(*(a[start:stop] for a in (p, g, m, v)))
            for got, want in zip(piece, whole):
                np.testing.assert_array_equal(got, want[start:stop])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "nesterov"])
@pytest.mark.parametrize("sizes", [[30, 40, 5], [784, 128, 64, 10]], ids=["small", "seed"])
def test_train_step_update_equals_the_optimizer_kernel_on_its_gradient(dtype, optimizer, sizes):
    """mlp_train_step's optimizer pass gives the same bits as sgd_step / adam_step run
    afterwards on the step's gradient (one element-wise update, whatever the chunking)."""
    rng = np.random.default_rng(2)
    layout, alphas, n = make_layout(sizes, ["relu"] * (len(sizes) - 2) + ["softmax"])
    params = (rng.standard_normal(n) * 0.1).astype(dtype)
    rows = 1 if optimizer == "nesterov" else 2
    state = (rng.random((rows, n)) * 0.01).astype(dtype)
    x = rng.standard_normal((33, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], 33)
    hyper = make_hyper(optimizer, lr=0.01, step=4, momentum=0.9, weight_decay=0.01)
    p_fused, s_fused, grads = params.copy(), state.copy(), np.empty_like(params)
    layers.mlp_train_step(x, labels, p_fused, grads, s_fused, record(layout, alphas), abi.LOSS_SPARSE_XENT, hyper,
                          None, None)
    p_sep, s_sep = params.copy(), state.copy()
    if optimizer == "nesterov":
        optim.sgd_step(p_sep, grads, s_sep[0], 0.01, 0.9, True, 0.01)
    else:
        optim.adam_step(p_sep, grads, s_sep[0], s_sep[1], 4, 0.01, 0.9, 0.999, 1e-8, 0.01,
                        optimizer == "adamw")
    np.testing.assert_array_equal(p_fused, p_sep)
    np.testing.assert_array_equal(s_fused, s_sep)
