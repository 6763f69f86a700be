"""Backend selection. Each backend is a module implementing the same kernel interface.

The interface (all arrays validated, C-contiguous, one float dtype; outputs preallocated;
``act_id`` from the activation registry; ``layout``/``alphas`` as in :mod:`fusedense.layout`)::

    activation_forward(z, act_id, alpha, y)                    y = act(z)
    activation_backward(dy, z, y, act_id, alpha, dz)           dz = dy · act'(z)  (z or y may be None)
    dense_forward(x, W, b, act_id, alpha, y, z)                z = x@W + b (z may be None), y = act(z)
    dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db)  dx may be None (skipped)
    mlp_forward(x, params, layout, alphas, out)                every layer in one call
    softmax_xent(logits, labels, dlogits) -> loss              labels int64; dlogits may be None
    sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay)
    adam_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)
    mlp_train_step(x, targets, params, grads, opt_state, layout, alphas, loss_id, hyper,
                   outputs=None) -> loss
    embedding_forward(tokens, params, layout, alphas, vocab_size, out)     gather + every layer
    embedding_train_step(tokens, labels, params, grads, opt_state, layout, alphas, hyper,
                         vocab_size, outputs=None) -> loss                 sparse cross-entropy
    embedding_generate(params, layout, alphas, vocab_size, context, uniforms, temperature,
                       boundary, tokens, lengths)                          the whole sampling loop

The ``embedding_*`` kernels put a token embedding in front of the network: ``tokens`` is
(n, context) int64 with ids in [0, vocab_size); the table (vocab_size × dim, dim = the first
layer's fan_in / context) is ``params[:vocab_size·dim]``, the layers follow it. The train step
scatter-adds dLoss/d(first layer's input) into the table's rows of ``grads`` before the
optimizer pass over the whole buffer. ``embedding_generate`` reads the network's output as
logits and samples every running row from float64 ``uniforms`` (n, max_len) by inverse CDF
(see ``reference.embedding_generate``: same uniforms, same tokens on every backend); it
writes ``tokens`` (n, max_len) int64, padded with ``boundary``, and ``lengths`` (n,) int64.

``mlp_train_step`` codes (loss ids, the ``hyper`` vector) live in :mod:`fusedense.abi`;
``opt_state`` is (1, n_params) for SGD (velocity) and (2, n_params) for Adam (m, v);
``outputs``, unless None, a (B, n_out) array that receives the network's outputs from the
step's own forward pass (before the update): training metrics without a second forward pass.
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
    """The backend module for ``name`` ('auto'/None: the fastest available); a backend that fails
    to load degrades to the next one with a single warning."""
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
