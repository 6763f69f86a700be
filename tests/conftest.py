import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fusedense as fd
from fusedense import _backends

# Property-based tests: "ci" (the default) is small, derandomized and bounded so CI stays fast and
# repeatable; `pytest --hypothesis-profile=long` explores many random examples for manual runs.
# deadline=None: a first call may compile (numba) or hit a cold cache, which is not a failure.
# The `backend` fixture only holds a name, so sharing it across examples is fine.
_FIXTURE_SHARED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=_FIXTURE_SHARED)
settings.register_profile("long", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=_FIXTURE_SHARED)
settings.load_profile("ci")  # --hypothesis-profile on the command line overrides this

def checked_backend(name):
    # a backend that fails to load degrades silently to the next one: make that a failure here
    assert _backends.load(name).NAME == name, f"backend {name!r} is listed but did not load"
    return name


@pytest.fixture(params=fd.backends())
def backend(request):
    return checked_backend(request.param)


@pytest.fixture(params=[name for name in fd.backends() if name != "numpy"])
def compiled_backend(request):
    """The compiled backends only: for properties the NumPy oracle does not have (it releases
    the GIL only inside NumPy calls, and allocates temporaries freely)."""
    return checked_backend(request.param)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
