"""Engine selection. Each engine is a module implementing ``interface.py``'s functions.

``load(name)`` gives the engine behind its gate (:mod:`fusedense.gate`), which checks every
argument before the one engine call; ``load_engine(name)`` gives the bare module, for the
benchmarks of the kernels alone and the engines' own tests. The codes the training kernels
share (loss ids, the ``hyper`` vector, optimizer ids) live in :mod:`fusedense.abi`.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
import warnings

_MODULES = {
    "cython": "fusedense._backends.cython_backend",
    "numba": "fusedense._backends.numba_backend",
    "numpy": "fusedense._backends.numpy_backend",
}
#: Fastest first: what "auto" tries.
PREFERENCE = ("cython", "numba", "numpy")

_loaded: dict = {}
_failed: dict = {}
_state = threading.local()
_default = os.environ.get("FUSEDENSE_BACKEND", "auto").strip().lower() or "auto"


def _is_installed(name: str) -> bool:
    """Cheap availability check that does not import heavy modules (numba stays unimported)."""
    if name in _failed or importlib.util.find_spec(_MODULES[name]) is None:
        return False
    if name == "cython":  # fusedense._kernels always exists (a package); look for a built module
        return importlib.util.find_spec("fusedense._kernels.activations") is not None
    if name == "numba":
        return importlib.util.find_spec("numba") is not None
    return True


def backends() -> list:
    """Names of the backends that can be used here, fastest first."""
    return [name for name in PREFERENCE if _is_installed(name)]


def _check_name(name):
    if not isinstance(name, str) or name not in _MODULES and name != "auto":
        raise ValueError(f"backend: unknown backend {name!r}; expected 'auto' or one of {', '.join(PREFERENCE)}")


def load(name: str):
    """The engine for ``name`` ('auto'/None: the fastest available) behind its gate
    (:class:`fusedense.gate.Gate`): what every front calls."""
    if name is None:
        name = getattr(_state, "backend", None) or _default
    gate = _gates.get(name)  # (every call of every front comes here: one dict lookup)
    if gate is None:
        from ..gate import Gate
        engine = load_engine(name)
        gate = _gate_of_engine.get(engine.NAME)
        if gate is None:
            gate = _gate_of_engine[engine.NAME] = Gate(engine)
        _gates[name] = gate
    return gate


_gates: dict = {}  # by the name asked for ('auto', 'cython', ...): a failed engine stays failed
_gate_of_engine: dict = {}


def load_engine(name: str):
    """The engine module itself, unchecked (for benchmarks of the bare kernels and the engines'
    own tests); a backend that fails to load degrades to the next one with a single warning."""
    if name is None:
        name = getattr(_state, "backend", None) or _default
    _check_name(name.lower() if isinstance(name, str) else name)
    name = name.lower()
    candidates = PREFERENCE if name == "auto" else PREFERENCE[PREFERENCE.index(name):]
    for candidate in candidates:
        module = _loaded.get(candidate)
        if module is not None:
            return module
        if not _is_installed(candidate):
            if candidate == name:
                _warn_fallback(candidate, "it is not installed")
            continue
        try:
            module = importlib.import_module(_MODULES[candidate])
        except Exception as exc:  # a broken build must not break `import fusedense`
            _failed[candidate] = exc
            _warn_fallback(candidate, f"{type(exc).__name__}: {exc}")
            continue
        _loaded[candidate] = module
        return module
    raise RuntimeError("no fusedense backend could be loaded")  # numpy always loads


_warned = set()


def _warn_fallback(name, why):
    if name not in _warned:
        _warned.add(name)
        warnings.warn(f"fusedense: backend {name!r} is unavailable ({why}); using the next one",
                      RuntimeWarning, stacklevel=4)


def set_backend(name: str) -> None:
    """Sets the default backend for this process ('auto', 'cython', 'numba' or 'numpy')."""
    global _default
    name = str(name).lower()
    _check_name(name)
    _default = name


def get_backend() -> str:
    """The name of the backend that a call without ``backend=`` uses now."""
    return load(None).NAME


@contextlib.contextmanager
def use_backend(name: str):
    """``with fd.use_backend("numba"): ...`` selects a backend for this thread inside the block."""
    name = str(name).lower()
    _check_name(name)
    previous = getattr(_state, "backend", None)
    _state.backend = name
    try:
        yield
    finally:
        _state.backend = previous
