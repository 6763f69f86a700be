"""MLP.from_torch / MLP.from_sklearn give the source model's outputs."""
import warnings

import numpy as np
import pytest

import fusedense as fd


def test_from_torch_matches_the_torch_module():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.GELU(), nn.Dropout(0.5),
                           nn.Linear(12, 10), nn.LeakyReLU(0.2), nn.Linear(10, 8), nn.Tanh(),
                           nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 8, bias=False), nn.ELU(0.7),
                           nn.Linear(8, 4), nn.Softmax(dim=1)).eval()
    x = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    net = fd.MLP.from_torch(module)
    assert net.activations == ("relu", "gelu_erf", "leaky_relu", "tanh", "silu", "elu", "softmax")
    np.testing.assert_allclose(net.predict(x), expected, rtol=1e-5, atol=1e-6)


def test_from_torch_rejects_unsupported_modules_and_orders():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    with pytest.raises(ValueError, match=r"module\[1\]: Conv1d is not supported"):
        fd.MLP.from_torch(nn.Sequential(nn.Linear(3, 3), nn.Conv1d(1, 1, 1)))
    with pytest.raises(ValueError, match="must directly follow a Linear"):
        fd.MLP.from_torch(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Tanh()))
    with pytest.raises(ValueError, match="no Linear"):
        fd.MLP.from_torch(nn.Sequential(nn.Dropout()))


@pytest.mark.parametrize("n_classes", [2, 4])
def test_from_sklearn_classifier_gives_predict_proba(n_classes):
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, 5)), rng.integers(0, n_classes, 80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(12, 7), activation="tanh", max_iter=20, random_state=0).fit(X, y)
    out = fd.MLP.from_sklearn(clf).predict(X.astype(np.float32))
    expected = clf.predict_proba(X)
    np.testing.assert_allclose(out, expected[:, 1:] if n_classes == 2 else expected, rtol=1e-4, atol=1e-5)


def test_from_sklearn_regressor_gives_predict():
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPRegressor
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = MLPRegressor(hidden_layer_sizes=(9,), activation="logistic", max_iter=20, random_state=0).fit(X, X.sum(1))
    np.testing.assert_allclose(fd.MLP.from_sklearn(reg, dtype=np.float64).predict(X)[:, 0], reg.predict(X), rtol=1e-12)


def test_from_sklearn_rejects_unfitted_estimators():
    with pytest.raises(ValueError, match="fitted"):
        fd.MLP.from_sklearn(object())
