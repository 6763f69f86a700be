"""The numba backend's own concerns: serial/parallel size thresholds, determinism, thread counts,
lazy import, the on-disk compile cache, and the kernels' Python logic run without the JIT.
(tests/test_backends.py checks every op, activation and dtype against the reference.)"""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import fusedense as fd
from fusedense import abi, reference
from fusedense._numba_kernels import dense, gemm, jit, losses, mlp, optimizers
from fusedense.activations import BY_ID, activation_forward, activation_vjp, get_activation
from fusedense.layout import layer_record, make_layout

from support import assert_close

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

# Sizes on each side of the switches: from a serial kernel to its parallel variant (rows of
# N_COLS elements), from loops to BLAS (products of N_IN x N_COLS per row), and across the
# first forward GEMM row block.
N_IN, N_COLS = 64, 128
PARALLEL_ROWS = 2 * jit.PARALLEL_MIN_ELEMENTS // N_COLS
PARALLEL_EDGE = [PARALLEL_ROWS - 1, PARALLEL_ROWS, PARALLEL_ROWS + 1]
BLAS_ROWS = gemm.BLAS_MIN_WORK // (N_IN * N_COLS)
BLAS_EDGE = [BLAS_ROWS - 1, BLAS_ROWS]
GEMM_EDGE = ["gemm_rows", "gemm_rows+1"]


def batch_size(batch, dtype):
    """A batch size, or the GEMM row block (+1) for N_COLS outputs of this dtype."""
    if isinstance(batch, int):
        return batch
    return dense.gemm_rows(N_COLS, np.dtype(dtype).itemsize) + batch.endswith("+1")


def _run(code, **env):
    """Runs ``code`` in a fresh interpreter (with ``src`` importable); returns its stdout."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, check=True).stdout.strip()


@pytest.mark.parametrize("activation", ["relu", "gelu_erf", "softmax"])
@pytest.mark.parametrize("batch", BLAS_EDGE + GEMM_EDGE)
def test_dense_layer_matches_reference_on_both_sides_of_the_thresholds(dtype, activation, batch, rng):
    act = get_activation(activation)
    batch = batch_size(batch, dtype)
    x = rng.normal(size=(batch, N_IN)).astype(dtype)
    W = (rng.normal(size=(N_IN, N_COLS)) / 8).astype(dtype)
    b = rng.normal(size=N_COLS).astype(dtype)
    y, z = fd.dense(x, W, b, activation=activation, backend="numba", return_preactivation=True)
    y_ref, z_ref = reference.dense_forward(x, W, b, act, 0.0)
    assert_close(y, y_ref, dtype, 4)
    assert_close(z, z_ref, dtype, 4)
    dy = rng.normal(size=y.shape).astype(dtype)
    for got, want in zip(fd.dense_grad(dy, x, W, z=z, activation=activation, backend="numba"),
                         reference.dense_backward(dy, x, W, z_ref, y_ref, act, 0.0)):
        assert_close(got, want, dtype, np.sqrt(batch))


@pytest.mark.parametrize("batch", PARALLEL_EDGE)
def test_activation_kernels_match_reference_on_both_sides_of_the_threshold(dtype, batch, rng):
    z = rng.normal(size=(batch, N_COLS)).astype(dtype)
    dy = rng.normal(size=z.shape).astype(dtype)
    for act in BY_ID:
        alpha = act.default_alpha or 0.0
        assert_close(fd.activate(z, act.name, backend="numba"), act.forward(z, alpha), dtype)
        assert_close(fd.activation_grad(dy, z=z, activation=act.name, backend="numba"),
                     activation_vjp(act, dy, z, None, alpha), dtype)


@pytest.mark.parametrize("batch", PARALLEL_EDGE)
def test_softmax_xent_matches_reference_on_both_sides_of_the_threshold(dtype, batch, rng):
    logits = rng.normal(size=(batch, N_COLS)).astype(dtype)
    labels = rng.integers(0, N_COLS, batch)
    loss, grad = fd.softmax_cross_entropy(logits, labels, backend="numba")
    loss_ref, grad_ref = reference.softmax_cross_entropy(logits, labels)
    assert loss == pytest.approx(float(loss_ref), rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(grad, grad_ref, dtype)


@pytest.mark.parametrize("n_cols", [1, 27, 33])
def test_sparse_xent_block_pass_gives_the_row_kernels_bits(dtype, n_cols, rng):
    """The sparse cross-entropy with a gradient takes its exponentials in one pass over the
    block (losses._sparse_xent_rows): the same loss and gradient, to the bit, as the row kernel
    (losses._loss_row), with sample weights, a block that starts past row 0, and a NaN row."""
    logits = rng.normal(scale=3, size=(9, n_cols)).astype(dtype)
    logits[1, 0] = np.nan
    labels = rng.integers(0, n_cols, 9)
    weights = rng.uniform(0.5, 2, 9).astype(dtype)
    grad = np.full_like(logits, 7.0)
    got = losses._sparse_xent_rows(logits, labels, weights, grad, 0.25, 2, 9)
    want_grad = np.full_like(logits, 7.0)
    want = 0.0
    for i in range(2, 9):
        want += float(weights[i]) * losses._loss_row(abi.LOSS_SPARSE_XENT, logits[i], logits[i], labels[i],
                                                     logits[i, :0], want_grad[i], 0.25 * float(weights[i]))
    assert got == want  # the same rows' sum, in the same order
    np.testing.assert_array_equal(grad, want_grad)
    assert (grad[:2] == 7.0).all()  # rows before the block untouched
    assert np.isnan(losses._sparse_xent_rows(logits, labels, weights, grad, 0.25, 0, 3))
    assert np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2]]).all()


@pytest.mark.parametrize("size", [2 * optimizers.BLOCK - 1, 2 * optimizers.BLOCK, 3 * optimizers.BLOCK + 5])
def test_optimizers_match_reference_on_both_sides_of_the_threshold(dtype, size, rng):
    p, g, m = (rng.normal(size=size).astype(dtype) for _ in range(3))
    v = rng.uniform(size=size).astype(dtype)
    expected = [a.copy() for a in (p, g, m, v)]
    reference.adam_step(*expected, 2, 0.01, 0.9, 0.999, 1e-8, 0.01, True)
    fd.adam_step(p, g, m, v, 2, lr=0.01, weight_decay=0.01, decoupled=True, backend="numba")
    for got, want in zip((p, m, v), (expected[0], expected[2], expected[3])):
        assert_close(got, want, dtype)
    reference.sgd_step(expected[0], expected[1], expected[2], 0.1, 0.9, True, 0.01)
    fd.sgd_step(p, g, m, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, backend="numba")
    assert_close(p, expected[0], dtype)
    assert_close(m, expected[2], dtype)


@pytest.mark.parametrize("batch", [1] + GEMM_EDGE)
def test_mlp_forward_matches_reference_across_gemm_row_blocks(dtype, batch, rng):
    batch = batch_size(batch, dtype)
    layout, alphas, n = make_layout([13, N_COLS, 7, 5], ["elu", "relu", "log_softmax"])
    params = (rng.normal(size=n) * 0.3).astype(dtype)
    x = rng.normal(size=(batch, 13)).astype(dtype)
    assert_close(fd.mlp_forward(x, params, layout, alphas, backend="numba"),
                 reference.mlp_forward(x, params, layer_record(layout, alphas, n)), dtype, 4)


@pytest.mark.parametrize("n_cols", [1, 5, 16, 17, 33, 70, 130, 200])
def test_tiled_matmul_covers_every_row_and_column_edge(dtype, n_cols, rng):
    """Batches 1-17 cross the row tiles (TILE_ROWS rows, then lone rows) and the widths cross
    the column tiles; a transposed a is read element-wise; each row's sums run in one order,
    so a row's result is bit-identical whether it sits in a tile or alone."""
    b = rng.normal(size=(37, n_cols)).astype(dtype)
    for batch in range(1, 18):
        a = rng.normal(size=(batch, 37)).astype(dtype)
        out = np.full((batch, n_cols), np.nan, dtype)
        gemm.tiled_matmul(a, b, out)
        assert_close(out, a.astype(np.float64) @ b, dtype, 4)
        out_t = np.full_like(out, np.nan)
        gemm.tiled_matmul(np.asfortranarray(a), b, out_t)
        np.testing.assert_array_equal(out_t, out)
        for i in (0, batch - 1):
            alone = np.empty((1, n_cols), dtype)
            gemm.tiled_matmul(a[i:i + 1], b, alone)
            np.testing.assert_array_equal(alone[0], out[i])


def test_tiled_matmul_streams_the_rows_left_beside_a_large_b_with_the_same_bits(dtype, rng):
    """With b of LARGE_B_BYTES or more, the rows after the TILE_ROWS-row tiles are streamed
    (4, 2, then 1 at a time): the same sums as the lone-row tiles, which compute them when b is
    split into two halves below the threshold."""
    n_cols = 1001
    depth = gemm.LARGE_B_BYTES // (n_cols * np.dtype(dtype).itemsize) + 1
    b = rng.normal(size=(depth, n_cols)).astype(dtype)
    halves = np.ascontiguousarray(b[:, :500]), np.ascontiguousarray(b[:, 500:])
    for batch in range(1, gemm.TILE_ROWS + 8):
        a = rng.normal(size=(batch, depth)).astype(dtype)
        streamed = np.full((batch, n_cols), np.nan, dtype)
        gemm.tiled_matmul(a, b, streamed)
        for half, columns in zip(halves, (slice(0, 500), slice(500, None))):
            in_tiles = np.full((batch, half.shape[1]), np.nan, dtype)
            gemm.tiled_matmul(a, half, in_tiles)
            np.testing.assert_array_equal(streamed[:, columns], in_tiles)
    assert_close(streamed, a.astype(np.float64) @ b, dtype, 4)


@pytest.mark.parametrize("depth", [1, gemm.PACKED_K + 1, 2 * gemm.PACKED_K + 88])
def test_packed_matmul_gives_the_tiled_bits_across_slices_chunks_and_row_tiles(dtype, depth, rng):
    """The packed path adds the same products in the same order as the tiles: k slices carried
    over in out, column chunks, the last partial strip, leftover rows in tiles of 4, 2 and 1,
    a transposed a."""
    for n_cols in (5, 33, gemm.packed_chunk_columns(np.empty((1, 1), dtype)) + 17):  # past a chunk
        b = rng.normal(size=(depth, n_cols)).astype(dtype)
        for batch in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 23):
            a = rng.normal(size=(batch, depth)).astype(dtype)
            tiled, packed = (np.full((batch, n_cols), np.nan, dtype) for _ in range(2))
            gemm.tiled_matmul(a, b, tiled)
            gemm.packed_matmul(a, b, packed)
            np.testing.assert_array_equal(packed, tiled)
            packed_t = np.full_like(packed, np.nan)
            gemm.packed_matmul(np.asfortranarray(a), b, packed_t)
            np.testing.assert_array_equal(packed_t, tiled)
        assert_close(packed, a.astype(np.float64) @ b, dtype, 4)


@pytest.mark.parametrize("n_cols", [1, 27, 30, 200])
def test_matmul_with_a_transposed_b_gives_the_bits_of_its_c_ordered_copy(dtype, n_cols, rng):
    """The backward's dx = dz Wᵀ: matmul copies an F-ordered b into C order (its own transpose
    loop) and runs the tiles of a C-ordered b over it, right-edge columns included: the same
    bits as on a C-ordered copy made by NumPy, and the product's value."""
    a = rng.normal(size=(37, 45)).astype(dtype)
    w = rng.normal(size=(n_cols, 45)).astype(dtype)
    transposed, copied = (np.full((37, n_cols), np.nan, dtype) for _ in range(2))
    gemm.matmul(a, w.T, transposed)
    gemm.matmul(a, np.ascontiguousarray(w.T), copied)
    np.testing.assert_array_equal(transposed, copied)
    assert_close(transposed, a.astype(np.float64) @ w.T.astype(np.float64), dtype, 4)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [gemm.PACKED_MIN_ROWS - 1, gemm.PACKED_MIN_ROWS, 37,
                                   gemm.PACKED_MAX_ROWS, gemm.PACKED_MAX_ROWS + 1])
def test_dense_layer_with_a_large_weight_matches_reference_on_both_sides_of_packing(
        dtype, batch, threads, rng):
    """W of LARGE_B_BYTES: packed copies for PACKED_MIN_ROWS to PACKED_MAX_ROWS rows on
    one thread, BLAS outside them or with more threads (BLAS then runs in parallel)."""
    n_in, n_out = 1024, gemm.LARGE_B_BYTES // (1024 * np.dtype(dtype).itemsize)
    x = rng.normal(size=(batch, n_in)).astype(dtype)
    W = (rng.normal(size=(n_in, n_out)) / 32).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype)
    previous = fd.set_num_threads(threads)
    try:
        y = fd.dense(x, W, b, activation="gelu", backend="numba")
        packs = gemm.worth_packing(batch, n_out, n_in, np.dtype(dtype).itemsize, numba.get_num_threads())
        one_thread = numba.get_num_threads() == 1  # numba caps the count at its pool (1 on one core)
    finally:
        fd.set_num_threads(previous)
    assert packs == (one_thread and gemm.PACKED_MIN_ROWS <= batch <= gemm.PACKED_MAX_ROWS)
    assert_close(y, reference.dense_forward(x, W, b, get_activation("gelu"), 0.0)[0], dtype, 4)


EXTREMES = [-1000.0, -745.0, -709.0, -100.0, -30.0, -1e-8, -0.0, 0.0, 1e-8, 0.5, 30.0, 100.0,
            1000.0, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("activation", ["tanh", "gelu", "sigmoid", "silu"])
def test_vectorised_activation_loops_match_reference_at_extreme_inputs(dtype, activation, rng):
    """The branch-free row loops (fastexp inside) in place and not, over rows crossing the
    vector widths: saturation, ±inf, NaN, ±0 and inputs below e^x's normal range as the
    reference (which computes in float64 what these loops round to the dtype), and gelu's
    derivative."""
    act = get_activation(activation)
    z = np.concatenate([EXTREMES, rng.normal(scale=4, size=21)]).astype(dtype).reshape(1, -1)
    with np.errstate(all="ignore"):  # inf - inf inside the reference forms
        expected = activation_forward(act, z.astype(np.float64), 0.0)
        y = fd.activate(z, activation, backend="numba")
        in_place = np.empty_like(z)  # z = 1 @ 0 + b, then y = act(z) in place
        dense.dense_rows(np.ones((1, 1), dtype), np.zeros((1, z.shape[1]), dtype), z[0], act.id,
                         0.0, in_place, in_place)
    for got in (y, in_place):
        assert_close(got, expected, dtype)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    if activation == "gelu":
        dy = rng.normal(size=z.shape).astype(dtype)
        finite = np.isfinite(z)
        with np.errstate(all="ignore"):
            got = fd.activation_grad(dy, z=z, activation="gelu", backend="numba")
            want = activation_vjp(act, dy.astype(np.float64), z.astype(np.float64), None, 0.0)
        assert_close(got[finite], want[finite], dtype)


def test_mlp_forward_kernel_asks_for_a_larger_workspace_before_computing(rng):
    layout, alphas, n = make_layout([13, 40, 7, 5], ["tanh", "relu", "softmax"])
    layers = layer_record(layout, alphas, n)
    params = (rng.normal(size=n) * 0.3).astype(np.float32)
    x = rng.normal(size=(9, 13)).astype(np.float32)
    out = np.full((9, 5), np.nan, np.float32)
    needed = mlp.mlp_forward(x, params, layers, out, np.empty(0, np.float32))
    assert needed > 0 and np.isnan(out).all()
    assert mlp.mlp_forward(x, params, layers, out, np.empty(needed, np.float32)) == 0
    assert_close(out, reference.mlp_forward(x, params, layers), np.float32, 4)


def _parallel_results(rng):
    """Results of the parallel variants (two blocks or more each) on fixed inputs."""
    z = rng.normal(size=(PARALLEL_ROWS + 5, N_COLS)).astype(np.float32)
    labels = rng.integers(0, N_COLS, z.shape[0])
    p, g, m = (rng.normal(size=z.size).astype(np.float32) for _ in range(3))
    v = rng.uniform(size=z.size).astype(np.float32)
    fd.adam_step(p, g, m, v, 1, backend="numba")
    loss, grad = fd.softmax_cross_entropy(z, labels, backend="numba")
    dz = fd.activation_grad(grad, z=z, activation="gelu_erf", backend="numba")
    return [np.array(loss), grad, dz, p, m, v]


def test_parallel_results_do_not_depend_on_repeats_or_thread_count():
    """Partial sums (the loss) are per fixed-size block, added in block order."""
    previous = fd.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    try:
        first = _parallel_results(np.random.default_rng(5))
        runs = [_parallel_results(np.random.default_rng(5))]
        fd.set_num_threads(1)
        runs.append(_parallel_results(np.random.default_rng(5)))
    finally:
        fd.set_num_threads(previous)
    for run in runs:
        for got, want in zip(run, first):
            np.testing.assert_array_equal(got, want)


def test_set_num_threads_reaches_numba_clipped_to_its_pool():
    previous = fd.set_num_threads(1)
    try:
        assert numba.get_num_threads() == 1
        fd.set_num_threads(numba.config.NUMBA_NUM_THREADS + 5)
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    finally:
        fd.set_num_threads(previous)


@pytest.mark.parametrize("entry", ["dense", "mlp_forward"])
def test_one_thread_runs_the_blas_products_on_one_thread(entry):
    """Told one thread, the numba engine's BLAS products (np.dot inside a kernel, and fd.dense's
    BLAS path chosen in Python) run on the calling thread alone: in a fresh process that loads
    only the numba engine (so the Cython engine never sized the BLAS pool), every other thread
    of the process gets (almost) no CPU time during large products. At the BLAS default (every
    core) a second thread took about half of it."""
    out = _run(f"""
        import os, numpy as np, fusedense as fd
        from fusedense.layout import make_layout

        def cpu_ticks():  # utime + stime of each thread of this process
            ticks = {{}}
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{{task}}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ticks[int(task)] = int(fields[11]) + int(fields[12])
            return ticks

        fd.set_num_threads(1)
        rng = np.random.default_rng(0)
        x = rng.random((1024, 1024), dtype=np.float32)
        layout, alphas, n = make_layout([1024, 1024, 1024], ["relu", "identity"])
        params = rng.random(n, dtype=np.float32) * 0.01
        W, b = rng.random((1024, 1024), dtype=np.float32), np.zeros(1024, np.float32)
        run = (lambda: fd.dense(x, W, b, "relu", backend="numba")) if "{entry}" == "dense" else (
            lambda: fd.mlp_forward(x, params, layout, alphas, backend="numba"))
        run()
        before = cpu_ticks()
        for _ in range(40):
            run()
        after = cpu_ticks()
        me = after[os.getpid()] - before[os.getpid()]
        others = sum(t - before.get(task, 0) for task, t in after.items() if task != os.getpid())
        import sys
        from fusedense._backends import numba_backend
        print(me, others, numba_backend.blas_num_threads(), "fusedense._backends.cython_backend" in sys.modules)
    """)
    me, others, blas_threads, cython_loaded = out.split()
    assert cython_loaded == "False"
    assert blas_threads == "1"
    assert int(me) >= 20  # the products took CPU time (clock ticks of 10 ms) ...
    assert int(others) <= max(2, int(me) // 10)  # ... on the calling thread


def test_read_only_layer_record_is_aliased_once_per_array():
    """The writable alias of a read-only array (the layer record: its __array_interface__ costs
    ~30 µs, a whole Cython LM step) is made once per array and dropped with it."""
    from fusedense._backends import numba_backend
    layers = layer_record(*make_layout([5, 4, 3], ["relu", "softmax"])[:2], 5 * 4 + 4 + 4 * 3 + 3)
    assert not layers.flags.writeable
    alias = numba_backend._writable(layers)
    assert alias.flags.writeable and np.array_equal(alias, layers)
    assert alias.__array_interface__["data"][0] == layers.__array_interface__["data"][0]
    assert numba_backend._writable(layers) is alias
    key = id(layers)
    del layers, alias
    assert key not in numba_backend._ALIASES


def test_numba_is_imported_only_when_the_numba_backend_is_first_used():
    out = _run("""
        import sys, numpy as np, fusedense as fd
        fd.dense(np.ones((2, 3)), np.ones((3, 4)), backend="numpy")
        before = "numba" in sys.modules
        fd.dense(np.ones((2, 3)), np.ones((3, 4)), backend="numba")
        print(before, "numba" in sys.modules)
    """)
    assert out == "False True"


def test_a_second_process_loads_the_compiled_kernel_from_the_cache(tmp_path):
    code = """
        import numpy as np
        from fusedense._numba_kernels import optimizers
        p = np.ones(5)
        optimizers.sgd_step(p, p.copy(), np.zeros(5), 0.5, 0.0, False, 0.0)
        stats = optimizers.sgd_step.stats
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()), p[0])
    """
    assert _run(code, NUMBA_CACHE_DIR=str(tmp_path)) == "0 1 0.5"  # compiled, and saved
    assert _run(code, NUMBA_CACHE_DIR=str(tmp_path)) == "1 0 0.5"  # loaded, not compiled


def test_first_dense_call_compiles_only_its_product_path_and_activation(tmp_path):
    """fd.dense picks the product path in Python and runs a per-activation epilogue kernel:
    a cold first call at batch 8 compiles neither the packed path, nor matmul (which holds all
    three), nor the lone-row tiles, nor another activation's loops; a second process loads
    what the first compiled."""
    code = """
        import numpy as np, fusedense as fd
        from fusedense._numba_kernels import activations, dense, gemm
        y = fd.dense(np.ones((8, 16), np.float32), np.ones((16, 4), np.float32), activation="relu",
                     backend="numba")
        unused = [gemm.packed_matmul, gemm.matmul, gemm._lone_row, activations._branch_free_row,
                  activations.softmax_row, activations.forward_scalar]
        stats = dense.epilogue(activations.RELU).stats
        print(sum(len(k.signatures) for k in unused), sum(stats.cache_hits.values()),
              sum(stats.cache_misses.values()), y[0, 0])
    """
    assert _run(code, NUMBA_CACHE_DIR=str(tmp_path)) == "0 0 1 16.0"
    assert _run(code, NUMBA_CACHE_DIR=str(tmp_path)) == "0 1 0 16.0"


def test_kernels_run_as_plain_python_match_reference():
    """NUMBA_DISABLE_JIT=1 runs the kernels' Python source: checks its logic (blocking, row
    helpers, absent arrays, layout walking) independently of numba's compiler."""
    out = _run("""
        import numba, numpy as np
        from fusedense import abi, reference
        from fusedense.activations import BY_ID, activation_vjp
        from fusedense.layout import layer_record, make_layout
        from fusedense._backends import numba_backend as nb
        from fusedense._numba_kernels import gemm
        assert numba.config.DISABLE_JIT and not hasattr(nb.dense.dense_rows, "signatures")
        rng = np.random.default_rng(7)
        def check(got, want):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        x, W, b = rng.normal(size=(3, 5)), rng.normal(size=(5, 4)), rng.normal(size=4)
        for act in BY_ID:
            alpha = act.default_alpha or 0.0
            y, z = np.empty((3, 4)), np.empty((3, 4))
            nb.dense_forward(x, W, b, act.id, alpha, y, z)
            y_ref, z_ref = reference.dense_forward(x, W, b, act, alpha)
            check(y, y_ref); check(z, z_ref)
            dy, dx, dW, db = rng.normal(size=(3, 4)), np.empty((3, 5)), np.empty((5, 4)), np.empty(4)
            nb.dense_backward(dy, x, W, z, None, act.id, alpha, dx, dW, db)
            for got, want in zip((dx, dW, db), reference.dense_backward(dy, x, W, z_ref, y_ref, act, alpha)):
                check(got, want)
        wide = rng.normal(size=(2, 140000))  # the parallel variant, one row per block
        out = np.empty_like(wide)
        nb.activation_forward(wide, 1, 0.0, out)
        check(out, np.maximum(wide, 0))
        layout, alphas, n = make_layout([5, 6, 4], ["tanh", "softmax"])
        layers = layer_record(layout, alphas, n)
        params = rng.normal(size=n)
        out = np.empty((3, 4))
        nb.mlp_forward(x, params, layers, out)
        check(out, reference.mlp_forward(x, params, layers))
        a, b = rng.normal(size=(7, 260)), rng.normal(size=(260, 20))  # two k slices, 4+2+1 rows
        out = np.empty((7, 20))
        gemm.packed_matmul(a, b, out)
        check(out, a @ b)
        hyper = np.array([abi.OPT_SGD, 0.1, 0.9, 0, 0, 0.01, 1, 0, 1, 0, 1], float)
        for loss_id, targets in [(abi.LOSS_SPARSE_XENT, np.array([0, 3, 1])),
                                 (abi.LOSS_MSE, rng.normal(size=(3, 4)))]:
            p1, p2, s1, s2 = params.copy(), params.copy(), np.zeros((1, n)), np.zeros((1, n))
            grads = np.empty(n)
            loss = nb.mlp_train_step(x, targets, p1, grads, s1, layers, loss_id, hyper, None, None)
            loss_ref, grads_ref = reference.mlp_train_step(x, targets, p2, layers, s2, loss_id, hyper)
            check(loss, loss_ref); check(grads, grads_ref); check(p1, p2); check(s1, s2)
        print("ok")
    """, NUMBA_DISABLE_JIT="1")
    assert out == "ok"


def test_read_only_inputs_compile_no_new_kernel():
    """numba types read-only arrays apart; the engine passes them as writable aliases, so a
    read-only input reuses the kernel its writable twin compiled (and gets the same answer)."""
    rng = np.random.default_rng(0)
    layout, alphas, n = make_layout([5, 4, 3], ["relu", "softmax"])
    x, params = rng.random((6, 5), dtype=np.float32), rng.random(n, dtype=np.float32)
    writable = fd.mlp_forward(x, params, layout, alphas, backend="numba")
    signatures = len(mlp.mlp_forward.signatures)
    x.flags.writeable = params.flags.writeable = False
    np.testing.assert_array_equal(fd.mlp_forward(x, params, layout, alphas, backend="numba"), writable)
    assert len(mlp.mlp_forward.signatures) == signatures
    assert not x.flags.writeable and not params.flags.writeable  # the caller's arrays are untouched
