"""The registry's NumPy forms: derivatives against finite differences, stability at large |z|."""
import numpy as np
import pytest

import fusedense as fd
from fusedense.activations import BY_ID, activation_vjp, get_activation, resolve_alpha

ELEMENTWISE = [a.name for a in BY_ID if not a.rowwise]
ROWWISE = [a.name for a in BY_ID if a.rowwise]
# Away from the kinks of relu/leaky_relu/elu at 0, where the derivative is one-sided.
Z = np.concatenate([np.linspace(-30, -0.05, 40), np.linspace(0.05, 30, 40)])


def numeric_derivative(f, z, h=1e-6):
    return (f(z + h) - f(z - h)) / (2 * h)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_finite_differences(name):
    act = get_activation(name)
    alpha = resolve_alpha(act, None)
    expected = numeric_derivative(lambda t: act.forward(t, alpha), Z)
    got = act.derivative(Z, act.forward(Z, alpha), alpha)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", [a.name for a in BY_ID if a.from_output and not a.rowwise])
def test_derivative_from_output_alone_equals_derivative_from_preactivation(name):
    act = get_activation(name)
    alpha = resolve_alpha(act, None)
    y = act.forward(Z, alpha)
    np.testing.assert_allclose(act.derivative(None, y, alpha), act.derivative(Z, None, alpha), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ROWWISE)
def test_rowwise_vjp_matches_finite_differences(name, rng):
    act = get_activation(name)
    z = rng.normal(size=(3, 5)) * 4
    dy = rng.normal(size=(3, 5))
    expected = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = 1e-6
        expected[idx] = ((act.forward(z + e, 0) - act.forward(z - e, 0)) * dy).sum() / 2e-6
    np.testing.assert_allclose(activation_vjp(act, dy, z, None, 0), expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(activation_vjp(act, dy, None, act.forward(z, 0), 0), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", [a.name for a in BY_ID])
def test_forward_is_finite_and_overflow_free_at_large_magnitudes(name):
    act = get_activation(name)
    z = np.array([[-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        y = act.forward(z, resolve_alpha(act, None))
    assert np.isfinite(y).all()


def test_stable_forms_saturate_correctly():
    sig, softplus = get_activation("sigmoid"), get_activation("softplus")
    assert sig.forward(np.array([-1000.0]), 0)[0] == 0.0 and sig.forward(np.array([1000.0]), 0)[0] == 1.0
    assert softplus.forward(np.array([1000.0]), 0)[0] == 1000.0
    sm = get_activation("softmax").forward(np.array([[1000.0, 0.0]]), 0)
    np.testing.assert_array_equal(sm, [[1.0, 0.0]])


def test_registry_ids_are_stable():
    # compiled kernels dispatch on these numbers: renumbering would silently break them
    assert fd.ACTIVATIONS == ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu",
                              "gelu_erf", "silu", "softplus", "softmax", "log_softmax")


def test_aliases_resolve_to_registry_entries():
    assert get_activation("linear").name == "identity"
    assert get_activation(None).name == "identity"
    assert get_activation("swish").name == "silu"
