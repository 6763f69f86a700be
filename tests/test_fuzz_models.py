"""Model-level fuzzing (issue #16): hand-edited attributes of ``fd.MLP`` / ``fd.EmbeddingMLP``
(layout rows, alphas, the layer record, params, grads, opt_state, the step count, with wrong
shapes, dtypes and huge values) and random thread counts between calls.

The property: every edit and every call after it either succeeds or raises ValueError /
TypeError from fusedense's own Python code (the gate or the fronts; FloatingPointError too for a
training step, the documented answer to a diverging loss) — never another exception, never an
engine error, never a crash. A call that succeeds on an edited model gives the NumPy engine's
answer. Each engine runs the whole hypothesis test in its own subprocess, so that a segfault or
an abort fails the test instead of killing pytest.
"""
import os
import subprocess
import sys
import traceback

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fusedense as fd
from fusedense import threads
from fusedense.layout import LAYER

HUGE = [2**31, 2**32 + 1, 2**62, 2**63 - 1, -1, -(2**63)]
LOSS = "sparse_categorical_crossentropy"


def _front_error(exc):
    """Raised by fusedense's Python code (an engine must never be reached with bad values)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1].filename
    return os.sep + "fusedense" + os.sep in frame and os.sep + "_backends" + os.sep not in frame \
        and "_numba_kernels" not in frame


def _attempt(call, allowed=(ValueError, TypeError)):
    """The call's result, or None when it raised an allowed error from the fronts."""
    try:
        return call()
    except allowed as exc:
        assert _front_error(exc), f"{type(exc).__name__} raised past the gate: {exc}"
        return None


thread_counts = st.sampled_from([1, 2, threads.max_threads(), 0, -1, threads.max_threads() + 1, 2**33, 2.5, "4", True])


def _layout_edit(draw, layout):
    rows = np.array(layout)
    kind = draw(st.sampled_from(["cell", "shape", "dtype", "empty"]))
    if kind == "cell":
        r, c = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 3))
        rows[r, c] = draw(st.sampled_from(HUGE + [0, 1, 7, 10**6]))
        return rows
    if kind == "shape":
        return np.zeros((draw(st.integers(0, 3)), draw(st.integers(1, 5))), np.int64)
    if kind == "dtype":
        return rows.astype(draw(st.sampled_from([np.float64, np.int32, np.uint64, object])))
    return np.zeros((0, 4), np.int64)


def _array_edit(draw, like):
    """A replacement for a float array attribute: wrong shape, dtype, layout, or extreme values."""
    kind = draw(st.sampled_from(["values", "shape", "dtype", "strided", "readonly", "none", "list"]))
    if kind == "values":
        out = like.copy()
        out.flat[draw(st.integers(0, out.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e38, -1e30]))
        return out
    if kind == "shape":
        return np.zeros(draw(st.sampled_from([(0,), (1,), (like.size - 1,), (like.size + 1,), (1, like.size),
                                              (3, like.shape[-1]), like.shape[::-1]])), like.dtype)
    if kind == "dtype":
        return like.astype(draw(st.sampled_from([np.float16, np.int64, np.float64 if like.dtype == np.float32
                                                 else np.float32, np.complex64])))
    if kind == "strided":
        return np.repeat(like, 2, axis=-1)[..., ::2]
    if kind == "readonly":
        out = like.copy()
        out.flags.writeable = False
        return out
    return None if kind == "none" else like.tolist()


@st.composite
def edits(draw, net):
    """(attribute, value) pairs to assign, in order; "threads" sets fd.set_num_threads."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["layout", "alphas", "layers", "params", "grads", "opt_state", "step", "threads"]))
        if what == "layout":
            out.append((what, _layout_edit(draw, net.layout)))
        elif what == "alphas":
            out.append((what, draw(st.sampled_from([
                np.full(len(net.layout), np.nan), np.full(len(net.layout), -1.0), np.full(len(net.layout), 1e308),
                np.zeros(len(net.layout) + 1), np.zeros(max(len(net.layout) - 1, 0)), ["a"] * len(net.layout),
                np.ones((len(net.layout), 2)), None]))))
        elif what == "layers":  # a forged record that layer_record never checked
            forged = np.zeros(len(net.layout), LAYER)
            forged["fan_in"], forged["fan_out"] = net.sizes[:-1], net.sizes[1:]
            forged["offset"] = draw(st.sampled_from(HUGE[:4] + [net.n_params]))
            out.append((what, forged))
        elif what in ("params", "grads", "opt_state"):
            like = {"params": net.params, "grads": np.zeros(net.n_params, net.dtype),
                    "opt_state": np.zeros((2, net.n_params), net.dtype)}[what]
            out.append((what, _array_edit(draw, like)))
        elif what == "step":
            out.append((what, draw(st.sampled_from([2**63, 2**53 + 1, -1, 10**30, float("nan")]))))
        else:
            out.append((what, draw(thread_counts)))
    return out


def _apply(net, edit):
    name, value = edit
    if name == "threads":
        before = fd.get_num_threads()
        if _attempt(lambda: fd.set_num_threads(value)) is None:
            assert fd.get_num_threads() == before, "a refused thread count changed the count"
        return
    _attempt(lambda: setattr(net, name, value))


def _as_numpy_engine(net, call):
    """``call()`` on the same (edited) model with the NumPy engine: the oracle's answer."""
    engine = net.engine
    net.set_backend("numpy")
    try:
        return call()
    finally:
        net.engine = engine


def _same_as_oracle(got, expected):
    if got is not None and expected is not None and np.isfinite(got).all() and np.isfinite(expected).all():
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _model(kind, dtype, engine):
    if kind == "mlp":
        return fd.MLP([4, 5, 3], ["elu", "softmax"], dtype=dtype, random_state=0, backend=engine)
    return fd.EmbeddingMLP(6, 2, 3, [5, 6], "tanh", dtype=dtype, random_state=0, backend=engine)


def fuzz(engine, max_examples=60):
    """The hypothesis test for one engine (run by the subprocess)."""
    rng = np.random.default_rng(0)
    x = {"mlp": rng.normal(size=(4, 4)), "embedding": rng.integers(0, 6, (4, 3))}
    y = {"mlp": rng.integers(0, 3, 4), "embedding": rng.integers(0, 6, 4)}
    count = fd.get_num_threads()

    for kind in ("mlp", "embedding"):  # unedited, the engine agrees with the oracle
        net = _model(kind, np.float64, engine)
        np.testing.assert_allclose(net.predict(x[kind]), _as_numpy_engine(net, lambda: net.predict(x[kind])),
                                   rtol=1e-10, atol=1e-12)

    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None)
    @given(kind=st.sampled_from(["mlp", "embedding"]), dtype=st.sampled_from([np.float32, np.float64]),
           data=st.data())
    def property_(kind, dtype, data):
        net = _model(kind, dtype, engine)
        net.set_optimizer("adam")
        for edit in data.draw(edits(net)):
            _apply(net, edit)
        calls = [lambda: _attempt(lambda: net.train_step(x[kind], y[kind], LOSS),
                                  (ValueError, TypeError, FloatingPointError)),
                 lambda: _attempt(lambda: net.predict(x[kind]))]
        if kind == "embedding":
            calls.insert(1, lambda: _attempt(lambda: net.generate(2, 4, 0.7, seed=0)))
        try:
            got = _attempt(lambda: net.predict(x[kind]))
            _same_as_oracle(got, _attempt(lambda: _as_numpy_engine(net, lambda: net.predict(x[kind]))))
            for call in calls:  # a new thread count (or a refused one) between calls
                _apply(net, ("threads", data.draw(thread_counts)))
                call()
        finally:
            fd.set_num_threads(count)

    property_()


@pytest.mark.parametrize("engine", fd.backends())
def test_hand_edited_models_and_thread_counts_never_crash(engine):
    code = f"import test_fuzz_models as t; t.fuzz({engine!r})"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit code {done.returncode}\n{done.stderr[-4000:]}"
