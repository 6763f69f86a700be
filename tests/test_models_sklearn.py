"""MLPClassifier / MLPRegressor: scikit-learn's interface, trained by the fused kernels."""
import warnings

import numpy as np
import pytest

import fusedense as fd


def _classes(n=150, n_in=6, n_classes=3, seed=0):
    centers = np.random.default_rng(99).normal(scale=3.0, size=(n_classes, n_in))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    return centers[y] + rng.normal(size=(n, n_in)), y


def _quiet(estimator, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(*args)


def test_classifier_fits_predicts_and_scores_with_string_labels():
    X, y = _classes()
    names = np.array(["cat", "dog", "emu"])[y]
    clf = _quiet(fd.MLPClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0), X, names)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(axis=1), 1)
    assert set(clf.predict(X)) <= set(names) and clf.score(X, names) > 0.9
    assert len(clf.loss_curve_) == clf.n_iter_ == 50 and clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_binary_classifier_uses_one_logistic_output():
    X, y = _classes(n_classes=2)
    clf = _quiet(fd.MLPClassifier(hidden_layer_sizes=(8,), batch_size=16, max_iter=40, random_state=0), X, y == 1)
    assert clf.n_outputs_ == 1 and clf.out_activation_ == "logistic"
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 2) and np.allclose(proba.sum(axis=1), 1)
    assert clf.predict(X).dtype == bool and clf.score(X, y == 1) > 0.9


def test_regressor_fits_one_and_several_targets():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0])
    reg = _quiet(fd.MLPRegressor(hidden_layer_sizes=(32,), learning_rate_init=0.01, max_iter=150, random_state=0), X, y)
    assert reg.predict(X).shape == (200,) and reg.score(X, y) > 0.95
    Y = np.column_stack([y, -y])
    reg2 = _quiet(fd.MLPRegressor(hidden_layer_sizes=(32,), learning_rate_init=0.01, max_iter=150, random_state=0), X, Y)
    assert reg2.predict(X).shape == (200, 2) and reg2.score(X, Y) > 0.95


def test_coefs_and_intercepts_are_views_in_sklearn_shapes():
    X, y = _classes()
    clf = _quiet(fd.MLPClassifier(hidden_layer_sizes=(7, 5), max_iter=2, random_state=0), X, y)
    assert [W.shape for W in clf.coefs_] == [(6, 7), (7, 5), (5, 3)]
    assert [b.shape for b in clf.intercepts_] == [(7,), (5,), (3,)]
    clf.intercepts_[-1][:] = [0, 0, 100.0]
    assert (clf.predict(X) == 2).all()
    assert clf.n_layers_ == 4 and clf.n_features_in_ == 6


def test_same_random_state_gives_identical_models():
    X, y = _classes()
    a = _quiet(fd.MLPClassifier(max_iter=5, random_state=3), X, y)
    b = _quiet(fd.MLPClassifier(max_iter=5, random_state=3), X, y)
    np.testing.assert_array_equal(a.network_.params, b.network_.params)


def test_partial_fit_needs_classes_first_then_trains_one_epoch_per_call():
    X, y = _classes()
    clf = fd.MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:50], y[:50], classes=[0, 1, 2])
    for _ in range(20):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 21 and clf.score(X, y) > 0.9


def test_warm_start_continues_from_the_current_weights():
    X, y = _classes()
    clf = _quiet(fd.MLPClassifier(max_iter=3, warm_start=True, random_state=0), X, y)
    first = clf.loss_curve_[-1]
    _quiet(clf, X, y)
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 6 and clf.loss_curve_[-1] < first


def test_training_stops_when_the_loss_stops_improving():
    X, y = _classes()
    clf = _quiet(fd.MLPClassifier(max_iter=500, tol=0.5, n_iter_no_change=2, random_state=0), X, y)
    assert clf.n_iter_ < 10


def test_early_stopping_keeps_the_best_validation_weights():
    X, y = _classes(300)
    clf = _quiet(fd.MLPClassifier(max_iter=30, early_stopping=True, validation_fraction=0.2, random_state=0), X, y)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_errors_are_sklearns():
    X, y = _classes()
    with pytest.raises(ValueError, match="'solver' parameter"):
        fd.MLPClassifier(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="'activation' parameter"):
        fd.MLPClassifier(activation="gelu").fit(X, y)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        fd.MLPClassifier().fit(np.full((3, 2), np.nan), [0, 1, 0])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        fd.MLPClassifier().fit(X, y[:10])
    clf = _quiet(fd.MLPClassifier(max_iter=1), X, y)
    with pytest.raises(ValueError, match="X has 5 features"):
        clf.predict(X[:, :5])
    with pytest.raises(Exception, match="not fitted"):
        fd.MLPRegressor().predict(X)


def test_get_params_set_params_round_trip():
    clf = fd.MLPClassifier(hidden_layer_sizes=(10, 5), alpha=0.01, solver="sgd")
    params = clf.get_params()
    assert params["hidden_layer_sizes"] == (10, 5) and params["alpha"] == 0.01 and params["solver"] == "sgd"
    assert clf.set_params(alpha=0.5) is clf and clf.alpha == 0.5


# --- with scikit-learn installed ---------------------------------------------------------------

def test_works_in_pipeline_cross_val_score_and_grid_search():
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _classes()
    pipe = make_pipeline(StandardScaler(), fd.MLPClassifier(hidden_layer_sizes=(16,), batch_size=16, max_iter=30, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(pipe, X, y, cv=3)
        search = GridSearchCV(fd.MLPClassifier(batch_size=16, max_iter=20, random_state=0), {"alpha": [1e-4, 1e-2]}, cv=2).fit(X, y)
    assert scores.mean() > 0.85
    assert search.best_params_["alpha"] in (1e-4, 1e-2) and search.best_estimator_.score(X, y) > 0.85
    assert clone(fd.MLPRegressor(alpha=3.0)).alpha == 3.0


def test_digits_accuracy_within_one_point_of_sklearn():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16, y, test_size=0.25, random_state=0)
    ours, theirs = [], []
    for seed in range(3):
        params = dict(hidden_layer_sizes=(64,), max_iter=60, random_state=seed)
        ours.append(_quiet(fd.MLPClassifier(**params), Xtr, ytr).score(Xte, yte))
        theirs.append(_quiet(MLPClassifier(**params), Xtr, ytr).score(Xte, yte))
    assert abs(np.mean(ours) - np.mean(theirs)) <= 0.01


# SGD with a constant or 'invscaling' learning rate is the same update in both libraries (with
# momentum only at a constant rate: sklearn's velocity holds lr·grad, the fused SGD's holds grad),
# so from the same weights the whole training loop must agree to rounding: batches, loss_curve_,
# the tol / n_iter_no_change stop and 'adaptive' slow-downs. Adam's default differs by where eps enters
# (sklearn folds the bias corrections into the step size), which is visible only after a few steps
# (epsilon_added_to="sqrt_v" removes it: tests/test_sklearn_semantics.py).
SAME_AS_SKLEARN = {
    "sgd-nesterov": (dict(solver="sgd", learning_rate_init=0.01, momentum=0.9), 1e-12),
    "sgd-invscaling": (dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.05, momentum=0.0), 1e-12),
    "sgd-adaptive": (dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, momentum=0.0), 1e-12),
    "adam": (dict(solver="adam", learning_rate_init=0.001), 1e-5),
}


def _sklearn_twin(name, target, params):
    """(sklearn estimator, fusedense estimator) after one epoch each, the fusedense one then given
    sklearn's weights and best loss so that warm-started fits continue from the same state."""
    sknn = pytest.importorskip("sklearn.neural_network")
    X, labels = _classes()
    y = {"multiclass": labels, "binary": labels == 1,
         "regression": X @ np.linspace(-1, 1, X.shape[1]) / 4}[target]
    params = dict(hidden_layer_sizes=(8, 5), alpha=0.0, batch_size=32, shuffle=False, warm_start=True,
                  max_iter=1, random_state=0, tol=1e-2, n_iter_no_change=2, **params)
    theirs = _quiet(getattr(sknn, name)(**params), X, y)
    ours = _quiet(getattr(fd, name)(**params), X, y)
    for mine, their in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        mine[...] = their
    ours.best_loss_ = theirs.best_loss_
    return theirs, ours, X, y


@pytest.mark.parametrize("rule", list(SAME_AS_SKLEARN))
@pytest.mark.parametrize("name, target", [("MLPClassifier", "multiclass"), ("MLPClassifier", "binary"),
                                          ("MLPRegressor", "regression")])
def test_training_loop_matches_sklearn_epoch_by_epoch_from_the_same_weights(name, target, rule):
    params, rtol = SAME_AS_SKLEARN[rule]
    theirs, ours, X, y = _sklearn_twin(name, target, params)
    epochs = 40 if rule.startswith("sgd") else 4
    _quiet(theirs.set_params(max_iter=epochs), X, y)
    _quiet(ours.set_params(max_iter=epochs), X, y)
    assert len(ours.loss_curve_) == len(theirs.loss_curve_)  # the same epoch stopped both (or none did)
    np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=rtol)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_ and ours.loss_ == ours.loss_curve_[-1]
    for mine, their in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, their, rtol=rtol * 10, atol=rtol)


def test_sgd_runs_stop_early_in_the_sklearn_comparison():
    """The comparison above covers the tol / n_iter_no_change stop: some SGD runs end before max_iter."""
    theirs, _, X, y = _sklearn_twin("MLPClassifier", "binary", SAME_AS_SKLEARN["sgd-nesterov"][0])
    assert len(_quiet(theirs.set_params(max_iter=40), X, y).loss_curve_) < 41


def _run_without_sklearn(code):
    import os
    import subprocess
    import sys
    prelude = "import sys; sys.modules['sklearn'] = None\n"  # makes `import sklearn` fail
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env)


def test_estimators_work_without_sklearn():
    result = _run_without_sklearn(
        "import numpy as np, fusedense as fd\n"
        "X = np.random.default_rng(0).normal(size=(60, 3)); y = (X[:, 0] > 0).astype(int)\n"
        "clf = fd.MLPClassifier(hidden_layer_sizes=(8,), batch_size=10, max_iter=30, random_state=0).fit(X, y)\n"
        "assert clf.score(X, y) > 0.9, clf.score(X, y)\n"
        "assert clf.set_params(alpha=0.1).get_params()['alpha'] == 0.1\n"
        "reg = fd.MLPRegressor(max_iter=5).fit(X, X[:, 0]); print(reg.score(X, X[:, 0]) <= 1)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_import_fusedense_does_not_import_optional_packages():
    import subprocess
    import sys
    code = ("import sys, fusedense\n"
            "print(sorted(m for m in ('sklearn', 'torch', 'onnxruntime', 'gender_guesser') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
