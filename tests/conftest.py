import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends

#: Per-dtype tolerances for comparing a backend with the reference. float32 kernels reorder
#: sums (blocking, FMA), so a few ulps of the accumulated magnitude; float64 is near exact.
TOLERANCES = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def assert_close(actual, expected, dtype, scale=1.0):
    tol = TOLERANCES[np.dtype(dtype).type]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


@pytest.fixture(params=fd.backends())
def backend(request):
    name = request.param
    # a backend that fails to load degrades silently to the next one: make that a failure here
    assert _backends.load(name).NAME == name, f"backend {name!r} is listed but did not load"
    return name



@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
