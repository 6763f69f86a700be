"""Property-based fuzzing: every backend against the NumPy oracle (fusedense.reference).

Hypothesis draws shapes (1, odd sizes, 3-d batches), dtypes, activations and alphas, memory
layouts (C, Fortran, strided and reversed views) and value ranges from 1e-20 to 1e4. The arrays
themselves come from a drawn seed, which keeps examples cheap and reproducible.
The "ci" profile (default, see conftest.py) runs a few derandomized examples;
``pytest --hypothesis-profile=long tests/test_fuzz.py`` runs many random ones.

Tolerances. A float32/float64 kernel and the float64 oracle see the same (rounded) inputs, so
they differ only by the rounding of the kernel's own arithmetic. For a sum of n products that
error is bounded by n·u·Σ|x_k w_k| (u = unit roundoff), whatever the blocking or FMA use; so each
output element is compared with a tolerance proportional to the magnitude of ITS accumulated
terms (e.g. |x| @ |W| + |b|), not to its value, which may be a tiny difference of 1e8-sized
terms. RTOL (per dtype) is that bound for the largest sums drawn here (n ≤ 200): float32
u = 6e-8 → 200·6e-8 ≈ 1.2e-5, taken as 2e-5; float64 u = 1.1e-16 → 2.2e-14, taken as 1e-12 like
the rest of the suite. EVAL bounds one activation (or derivative) evaluation relative to the
size of its input and output; the same inputs fed through the oracle's formula in float64 must
agree with the kernel to that. tiny() covers products that underflow (1e-20 · 1e-20 is below float32's
normal range, and a kernel may flush denormals to zero): at most n of them, each < the smallest
normal number.
"""
import numpy as np
from hypothesis import given, strategies as st

import fusedense as fd
from fusedense import _backends, abi, reference
from fusedense.activations import BY_ID, activation_vjp, resolve_alpha
from fusedense.layout import make_layout

from support import make_hyper, record

RTOL = {np.float32: 2e-5, np.float64: 1e-12}
#: Evaluating one activation or derivative: about 20 ulps (2·10 for libm and the formula's own steps).
EVAL = {np.float32: 20 * 2**-24, np.float64: 20 * 2**-53}

dtypes = st.sampled_from([np.float32, np.float64])
magnitudes = st.sampled_from([1e-20, 1e-3, 1.0, 1e2, 1e4])
small_dims = st.one_of(st.integers(1, 9), st.integers(10, 200))  # edges (1, odd) and blocked paths
seeds = st.integers(0, 2**32 - 1)
layouts = st.sampled_from(["C", "F", "strided", "reversed"])
elementwise = [a for a in BY_ID if not a.rowwise]


@st.composite
def activations_with_alpha(draw, pool=BY_ID):
    """(activation, alpha): alpha is None (the default) or drawn, for activations that take one."""
    act = draw(st.sampled_from(pool))
    return act, draw(st.one_of(st.none(), st.floats(0, 3))) if act.has_alpha else None


def values(rng, shape, scale, dtype):
    """Uniform in ±scale, with some exact zeros (the kinks of relu & co.)."""
    a = rng.uniform(-scale, scale, shape)
    a[rng.uniform(size=shape) < 0.05] = 0.0
    return a.astype(dtype)


def arranged(a, how):
    """The same values in another memory layout (the API must copy or read it correctly)."""
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided":
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        big[tuple(slice(None, None, 2) for _ in a.shape)] = a
        return big[tuple(slice(None, None, 2) for _ in a.shape)]
    if how == "reversed":  # negative strides: a reversed view of a reversed copy
        flip = tuple(slice(None, None, -1) for _ in a.shape)
        return a[flip].copy()[flip]
    return a


def tiny(dtype):
    return np.finfo(dtype).tiny


def check_within(got, want, bound, what):
    """|got - want| <= bound element-wise; NaN and inf must appear in the same places."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    same_special = (np.isnan(got) == np.isnan(want)).all() and (np.isinf(got) == np.isinf(want)).all()
    assert same_special, f"{what}: NaN/inf in different places"
    finite = np.isfinite(want)
    err = np.abs(got - want)[finite]
    allowed = np.broadcast_to(bound, want.shape)[finite]
    worst = np.argmax(err - allowed) if err.size else None
    assert (err <= allowed).all(), (f"{what}: error {err[worst]:.3g} > allowed {allowed[worst]:.3g} "
                                    f"(got {got[finite][worst]!r}, want {want[finite][worst]!r})")


def f64(*arrays):
    return [None if a is None else np.asarray(a, np.float64) for a in arrays]


def output_bound(act, z, y, dtype):
    """Rounding allowed in y = act(z) given z: a few ulps of |y| + |z| (the |z| term covers
    formulas that cancel, like 0.5·z·(1 + tanh(…)) near tanh = −1); a row-wise activation's
    error follows the largest |z| of its row (log_softmax: also |y| ≈ log(n) for flat rows)."""
    scale = np.abs(y) + (np.abs(z).max(axis=-1, keepdims=True) + 1 if act.rowwise else np.abs(z))
    return EVAL[dtype] * scale + tiny(dtype)


def derivative_terms(act, dy, z, y, alpha):
    """The size that rounding in dz = dy · act'(z) is relative to: |dy|·(|act'| + 1) element-wise
    (the row-wise vjp y·(dy − Σ dy·y): |dy| + Σ|dy|). The tanh-form GELU derivative
    0.5(1 + t) + 0.5·z·(1 − t²)·√(2/π)·(1 + 3c·z²), t = tanh(…) ≈ ±1, amplifies the rounding of t
    by |z|·(1 + 3c·z²): that is the formula's own conditioning, present in the oracle as well."""
    if act.rowwise:
        return np.abs(dy).sum(axis=-1, keepdims=True) + np.abs(dy)
    scale = np.abs(activation_vjp(act, np.ones_like(dy), z, y, alpha)) + 1
    if act.name == "gelu":
        scale += np.abs(z) * (1 + 3 * 0.044715 * z * z)
    return np.abs(dy) * scale


# --- one dense layer -------------------------------------------------------------------------


@given(dtype=dtypes, act=activations_with_alpha(), B=small_dims, n_in=small_dims, n_out=small_dims,
       batch_dims=st.sampled_from([(), (2,)]), scale_x=magnitudes, scale_w=magnitudes, how=layouts, seed=seeds)
def test_dense_forward_matches_reference(backend, dtype, act, B, n_in, n_out, batch_dims, scale_x, scale_w, how, seed):
    (act, given_alpha), alpha = act, resolve_alpha(*act)
    rng = np.random.default_rng(seed)
    x = values(rng, batch_dims + (B, n_in), scale_x, dtype)
    W = values(rng, (n_in, n_out), scale_w, dtype)
    b = values(rng, n_out, scale_x * scale_w, dtype)
    with np.errstate(all="ignore"):
        y, z = fd.dense(arranged(x, how), arranged(W, how), b, activation=act.name, alpha=given_alpha,
                        backend=backend, return_preactivation=True)
        X, W64, b64 = f64(x.reshape(-1, n_in), W, b)
        z_ref = X @ W64 + b64
        y_of_z = act.forward(np.asarray(z, np.float64), alpha).reshape(y.shape)
    assert y.dtype == z.dtype == dtype and y.shape == z.shape == batch_dims + (B, n_out)
    terms = (np.abs(X) @ np.abs(W64) + np.abs(b64)).reshape(z.shape)
    check_within(z, z_ref.reshape(z.shape), RTOL[dtype] * terms + n_in * tiny(dtype), "z = x @ W + b")
    check_within(y, y_of_z, output_bound(act, z.astype(np.float64), y_of_z, dtype), f"y = {act.name}(z)")


@given(dtype=dtypes, act=activations_with_alpha(), B=small_dims, n_in=small_dims, n_out=small_dims,
       scale=st.sampled_from([1e-3, 1.0, 1e2]), how=layouts, from_output=st.booleans(),
       need_dx=st.booleans(), seed=seeds)
def test_dense_backward_matches_reference(backend, dtype, act, B, n_in, n_out, scale, how, from_output, need_dx, seed):
    (act, given_alpha), alpha = act, resolve_alpha(*act)
    rng = np.random.default_rng(seed)
    x, W = values(rng, (B, n_in), scale, dtype), values(rng, (n_in, n_out), 1 / np.sqrt(n_in), dtype)
    z = values(rng, (B, n_out), 3.0, dtype)
    dy = values(rng, (B, n_out), scale, dtype)
    with np.errstate(all="ignore"):
        y = act.forward(z, alpha).astype(dtype)
        given_zy = dict(y=arranged(y, how)) if from_output and act.from_output else dict(z=arranged(z, how))
        dx, dW, db = fd.dense_grad(arranged(dy, how), arranged(x, how), arranged(W, how), activation=act.name,
                                   alpha=given_alpha, need_dx=need_dx, backend=backend, **given_zy)
        zz, yy = (None, y) if "y" in given_zy else (z, None)
        want = reference.dense_backward(*f64(dy, x, W, zz, yy), act, alpha)
    dz_terms = derivative_terms(act, *f64(dy, zz, yy), alpha)  # then x and W add their own sums
    X, W64 = f64(x, W)
    assert (dx is None) != need_dx
    if need_dx:
        check_within(dx, want[0], (RTOL[dtype] + EVAL[dtype]) * (dz_terms @ np.abs(W64).T) + n_out * tiny(dtype), "dx")
    check_within(dW, want[1], (RTOL[dtype] + EVAL[dtype]) * (np.abs(X).T @ dz_terms) + B * tiny(dtype), "dW")
    check_within(db, want[2], (RTOL[dtype] + EVAL[dtype]) * dz_terms.sum(axis=0) + B * tiny(dtype), "db")


@given(dtype=dtypes, act=activations_with_alpha(), shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
       scale=magnitudes, how=layouts, seed=seeds)
def test_activation_kernels_match_reference(backend, dtype, act, shape, scale, how, seed):
    (act, given_alpha), alpha = act, resolve_alpha(*act)
    rng = np.random.default_rng(seed)
    z, dy = values(rng, tuple(shape), scale, dtype), values(rng, tuple(shape), 1.0, dtype)
    with np.errstate(all="ignore"):
        y = fd.activate(arranged(z, how), act.name, alpha=given_alpha, backend=backend)
        dz = fd.activation_grad(arranged(dy, how), z=arranged(z, how), activation=act.name, alpha=given_alpha, backend=backend)
        y_ref = act.forward(np.asarray(z, np.float64), alpha)
        dz_ref = activation_vjp(act, *f64(dy, z), None, alpha)
    check_within(y, y_ref, output_bound(act, z.astype(np.float64), y_ref, dtype), "y")
    check_within(dz, dz_ref, EVAL[dtype] * derivative_terms(act, *f64(dy, z), None, alpha) + tiny(dtype), "dz")


# --- whole networks --------------------------------------------------------------------------


@st.composite
def networks(draw, max_layers=4, max_width=40):
    """(sizes, [(activation, alpha)] per layer): row-wise activations only on the last layer."""
    sizes = draw(st.lists(st.integers(1, max_width), min_size=2, max_size=max_layers + 1))
    acts = [draw(activations_with_alpha(elementwise)) for _ in sizes[2:]]
    return sizes, acts + [draw(activations_with_alpha())]


def magnitude_bound(x, params, layout, alphas, dtype):
    """Bound on the rounding of the fused forward: layer by layer, the accumulated terms
    |h| @ |W| + |b| of each pre-activation, plus the error carried in from the previous layer
    (activations are Lipschitz with constant <= max(1.2, alpha); log_softmax <= 2)."""
    h_abs, err = np.abs(x), np.zeros_like(x)
    for (W, b), (_, _, _, act_id), alpha in zip(fd.layer_views(params, layout), layout, alphas):
        z_terms = (h_abs + err) @ np.abs(W) + np.abs(b)
        err_z = RTOL[dtype] * z_terms + err @ np.abs(W)
        lip = 2.0 if BY_ID[act_id].rowwise else max(1.2, alpha)
        h_abs = z_terms * lip + 1  # |act(z)| <= lip·|z| + 1 (sigmoid, softplus: O(1) at z = 0)
        err = lip * (err_z.max(axis=1, keepdims=True) if BY_ID[act_id].rowwise else err_z) + EVAL[dtype] * h_abs
    return 2 * err + layout[:, 1].max() * tiny(dtype)


@given(dtype=dtypes, net=networks(), B=small_dims, scale_x=st.sampled_from([1e-3, 1.0, 1e2, 1e4]),
       scale_w=st.sampled_from([1e-3, 0.3, 1.0]), how=st.sampled_from(["C", "F", "strided"]), seed=seeds)
def test_mlp_forward_matches_reference(backend, dtype, net, B, scale_x, scale_w, how, seed):
    sizes, acts = net
    layout, alphas, n = make_layout(sizes, [a.name for a, _ in acts], [alpha for _, alpha in acts])
    rng = np.random.default_rng(seed)
    params = values(rng, n, scale_w, dtype)
    x = values(rng, (B, sizes[0]), scale_x, dtype)
    with np.errstate(all="ignore"):
        out = fd.mlp_forward(arranged(x, how), params, layout, alphas, backend=backend)
        want = reference.mlp_forward(*f64(x, params), record(layout, alphas))
    assert out.dtype == dtype and out.shape == (B, sizes[-1])
    check_within(out, want, magnitude_bound(*f64(x, params), layout, alphas, dtype), "mlp output")


LOSS_LAST_ACTIVATION = {abi.LOSS_SPARSE_XENT: "softmax", abi.LOSS_CATEGORICAL_XENT: "softmax",
                        abi.LOSS_BINARY_XENT: "sigmoid", abi.LOSS_MSE: None}


def make_targets(rng, loss_id, B, C, dtype):
    if loss_id == abi.LOSS_SPARSE_XENT:
        return rng.integers(0, C, B)
    if loss_id == abi.LOSS_CATEGORICAL_XENT:
        return rng.dirichlet(np.ones(C), size=B).astype(dtype)
    if loss_id == abi.LOSS_BINARY_XENT:
        return (rng.uniform(size=(B, C)) > 0.5).astype(dtype)
    return rng.normal(size=(B, C)).astype(dtype)


@given(dtype=dtypes, net=networks(max_layers=3, max_width=24), loss_id=st.sampled_from(sorted(LOSS_LAST_ACTIVATION)),
       optimizer=st.sampled_from(["sgd", "nesterov", "adam", "adamw", "rmsprop"]), B=st.integers(1, 70),
       lr=st.sampled_from([1e-3, 0.1]), momentum=st.sampled_from([0.0, 0.9]), weight_decay=st.sampled_from([0.0, 1e-2]),
       step=st.integers(1, 1000), seed=seeds)
def test_mlp_train_step_matches_reference(backend, dtype, net, loss_id, optimizer, B, lr, momentum, weight_decay, step, seed):
    sizes, acts = net
    names = [a.name for a, _ in acts]
    names[-1] = LOSS_LAST_ACTIVATION[loss_id] or names[-1]  # MSE: any last activation, even softmax
    layout, alphas, n = make_layout(sizes, names, [alpha if a.name == name else None for (a, alpha), name in zip(acts, names)])
    rng = np.random.default_rng(seed)
    params = (rng.normal(size=n) / np.sqrt(max(sizes))).astype(dtype)
    x = rng.normal(size=(B, sizes[0])).astype(dtype)
    targets = make_targets(rng, loss_id, B, sizes[-1], dtype)
    state = (rng.uniform(size=(1 if optimizer in ("sgd", "nesterov") else 2, n)) * 0.01).astype(dtype)
    hyper = make_hyper(optimizer, lr, step, momentum, weight_decay)
    want_params, want_state = params.astype(np.float64), state.astype(np.float64)
    targets64 = targets if loss_id == abi.LOSS_SPARSE_XENT else targets.astype(np.float64)
    want_loss, want_grads = reference.mlp_train_step(x.astype(np.float64), targets64, want_params, record(layout, alphas),
                                                     want_state, loss_id, hyper)
    grads = np.zeros_like(params)
    loss = _backends.load(backend).mlp_train_step(x, targets, params, grads, state, record(layout, alphas), loss_id, hyper)
    # Normwise comparison: inputs here are O(1) and the nets shallow, so the backward pass is well
    # conditioned; the bound allows a few hundred ulps of the largest gradient per layer chain.
    tol = 50 * RTOL[dtype]
    assert abs(loss - want_loss) <= tol * (abs(want_loss) + 1)
    grad_scale = np.abs(want_grads).max() + 1e-3
    check_within(grads, want_grads, tol * grad_scale, "grads")
    # the update moves each parameter by at most lr·(|g| + …) (Adam: about lr), so compare the step
    step_scale = lr * (1 + grad_scale + weight_decay * np.abs(want_params).max())
    check_within(params, want_params, tol * (step_scale + np.abs(want_params)), "params")
    check_within(state, want_state, tol * (np.abs(want_state) + grad_scale), "optimizer state")
