"""gemm_nb's streamed rows (kernels/microkernels_body.h: over a large B, rows read B front to
back instead of in the tiles' column strips) against its tiles, straight from C:
tests/gemm_paths.c is compiled as the package compiles the kernels, and twice more with the
thresholds set so that every row is tiled or every row streamed (a lone row in passes of 8
steps, as over a B of 8 MiB or more). Every element is its start (0,
the bias, or C when accumulating) plus its products added one by one in increasing k, whatever
the path: the same bits, relu applied in the write-back included, with NaN, ±inf and -0 among
the products, in every ISA build this CPU runs."""
import ctypes
import os
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fusedense import tuning
from support import assert_close, relu_of

KERNELS = os.path.join(os.path.dirname(__file__), os.pardir, "kernels")
SOURCE = os.path.join(os.path.dirname(__file__), "gemm_paths.c")
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math"]  # setup.py's
HUGE = 1 << 62
PATHS = {"package": [], "tiles": [f"-DFD_STREAM_MIN_B_BYTES={HUGE}", f"-DFD_STREAM_ALL_MIN_B_BYTES={HUGE}"],
         "streamed": ["-DFD_STREAM_MIN_B_BYTES=0", "-DFD_STREAM_ALL_MIN_B_BYTES=0", "-DFD_STREAM_DEEP_B_BYTES=0"]}
ISAS = {0: "generic", 1: "avx2", 2: "avx512"}
ROWS = {isa: tuning.table(name)["TILE_ROWS"] for isa, name in ISAS.items()}  # FD_ROWS of each build
VECTOR_BYTES = {0: 16, 1: 32, 2: 64}
WIDE = 8  # FD_WIDE: vectors of a lone row's tile

P = ctypes.c_void_p
SSIZE = ctypes.c_ssize_t


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler})")
    out = tmp_path_factory.mktemp("gemm_paths")
    (out / "tuning.h").write_text(tuning.c_header())  # as setup.py generates it

    def build(path):
        target = str(out / f"gemm_{path}.so")
        subprocess.run([compiler, *FLAGS, "-shared", "-fPIC", "-I", KERNELS, "-I", str(out), *PATHS[path], SOURCE,
                        "-o", target], check=True, capture_output=True)
        lib = ctypes.CDLL(target)
        for t in "fd":
            getattr(lib, f"isa_gemm_nb_{t}").argtypes = [ctypes.c_int, SSIZE, SSIZE, SSIZE, P, SSIZE, SSIZE,
                                                         P, SSIZE, P, P, SSIZE, ctypes.c_int, ctypes.c_int]
            getattr(lib, f"isa_tiled_rows_{t}").argtypes = [ctypes.c_int, SSIZE, SSIZE, SSIZE]
            getattr(lib, f"isa_tiled_rows_{t}").restype = SSIZE
        return lib

    with ThreadPoolExecutor(len(PATHS)) as pool:
        return dict(zip(PATHS, pool.map(build, PATHS)))


def _isas(lib):
    return [isa for isa in ISAS if lib.isa_runs(isa)]


def gemm_nb(lib, isa, A, B, bias=None, C=None, accumulate=False, relu=False, transposed=False):
    """C = A @ B (+ bias) or C += A @ B through one ISA build; A given as Aᵀ's C-ordered array
    when transposed (a_rs = 1: dW = xᵀ dz). Returns a new C."""
    m, k = (A.shape[1], A.shape[0]) if transposed else A.shape
    n = B.shape[1]
    out = np.full((m, n), np.nan, B.dtype) if C is None else C.copy()
    strides = (1, m) if transposed else (k, 1)
    getattr(lib, "isa_gemm_nb_" + ("f" if B.dtype == np.float32 else "d"))(
        isa, m, n, k, A.ctypes.data, *strides, B.ctypes.data, n,
        None if bias is None else bias.ctypes.data, out.ctypes.data, n, accumulate, relu)
    return out


def _operands(rng, dtype, m, k, n):
    """A, B, bias and a C to accumulate into, with an inf (products inf*0 = NaN, ±inf) and a
    NaN in A's first rows, columns of B whose products are ±0, and -0 in the bias and C."""
    A = rng.standard_normal((m, k)).astype(dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    if k and m > 2:
        A[0, 0], A[1, k - 1] = np.inf, np.nan
        B[0, :3] = (0, 1, -1)[:n]
    B[:, 1::3] = -0.0
    bias = rng.standard_normal(n).astype(dtype)
    bias[::2] = -0.0
    C = rng.standard_normal((m, n)).astype(dtype)
    C[:, ::3] = -0.0
    return A, B, bias, C


def check_same_bits(libs, isa, dtype, m, k, n, rng, transposed=False):
    A, B, bias, C = _operands(rng, dtype, m, k, n)
    A_arg = np.ascontiguousarray(A.T) if transposed else A
    for start in ("zero", "bias", "accumulate"):
        kwargs = dict(bias=bias if start == "bias" else None, C=C if start == "accumulate" else None,
                      accumulate=start == "accumulate", transposed=transposed)
        results = {path: gemm_nb(lib, isa, A_arg, B, **kwargs) for path, lib in libs.items()}
        for path in ("streamed", "package"):
            assert results[path].tobytes() == results["tiles"].tobytes(), (ISAS[isa], path, start, m, k, n)
        for path, lib in libs.items():
            with_relu = gemm_nb(lib, isa, A_arg, B, relu=True, **kwargs)
            assert with_relu.tobytes() == relu_of(results["tiles"]).tobytes(), (ISAS[isa], path, start, m, k, n)
    return results["streamed"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_rows_give_the_tiles_bits_at_every_edge_shape(libs, dtype):
    """k = 0 and first passes of 1 to 8 steps (the streamed build takes 8 steps per pass for a
    lone row, 4 for more), rows on each side of a tile and of a pass (4 rows), every vector
    tail of every build, transposed A too."""
    rng = np.random.default_rng(17)
    for isa in _isas(libs["package"]):
        for m in (1, 2, 3, 4, 5, 7, 8, 9, 17):
            for k in (0, 1, 2, 3, 4, 5, 8, 9, 16, 17, 130):
                for n in (*range(1, 18), 31, 33, 63, 65, 129):
                    check_same_bits(libs, isa, dtype, m, k, n, rng, transposed=(m + k + n) % 3 == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_rows_match_float64(libs, dtype):
    """The streamed path on its own: finite operands against float64 products."""
    rng = np.random.default_rng(19)
    m, k, n = 5, 300, 77
    A, B = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    for isa in _isas(libs["streamed"]):
        C = gemm_nb(libs["streamed"], isa, A, B, bias)
        assert_close(C, A.astype(np.float64) @ B.astype(np.float64) + bias, dtype, np.sqrt(k))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_nb_streams_the_rows_its_thresholds_name(libs, dtype):
    """tiled_rows, gemm_nb's choice: every row tiled below the smaller threshold or when the
    tiles of the few rows span n (a lone row's: two tiles), the rows of 2- and 1-row tiles
    streamed from it, every row from the larger one; and the same bits on each side of both."""
    lib, itemsize = libs["package"], np.dtype(dtype).itemsize
    small, large = (ctypes.c_longlong.in_dll(lib, name).value
                    for name in ("stream_min_b_bytes", "stream_all_min_b_bytes"))
    assert 0 < small < large
    tiled_rows = getattr(lib, "isa_tiled_rows_" + ("f" if dtype == np.float32 else "d"))
    rng = np.random.default_rng(23)
    for isa in _isas(lib):
        rows, lone = ROWS[isa], WIDE * VECTOR_BYTES[isa] // itemsize
        n = 2 * lone + 3  # past two lone-row tiles: the rows of 2- and 1-row tiles stream
        k_small, k_large = small // (n * itemsize), large // (n * itemsize)  # B just under each

        def big_tiles(m):  # the rows of full and 4-row tiles
            return m - m % rows % 4
        for k, tiled in ((k_small, lambda m: m), (k_small + 1, big_tiles), (k_large, big_tiles),
                         (k_large + 1, lambda m: 0)):
            for m in (1, rows - 1, rows, rows + 1, 2 * rows + 3):
                assert tiled_rows(isa, m, n, k) == tiled(m), (ISAS[isa], m, n, k)
            for m in (1, rows + 3):
                check_same_bits(libs, isa, dtype, m, k, n, rng)
        # past the threshold, but a lone row's two tiles (or 2 and 3 rows' one) span n
        for width, m in ((lone, 3), (2 * lone, 1), (2 * lone, rows + 1)):
            k = small // (width * itemsize) + 1
            assert tiled_rows(isa, m, width, k) == m, (ISAS[isa], m, width)
        assert tiled_rows(isa, 2, 2 * lone, small // (2 * lone * itemsize) + 1) == 0
