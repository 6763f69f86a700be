"""Estimators, fitted or not, pickle and joblib-dump into files that a FRESH Python process loads
and predicts from with identical results; clone gives an unfitted copy with the same parameters."""
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fusedense as fd

joblib = pytest.importorskip("joblib")
from sklearn.base import clone  # noqa: E402

RNG = np.random.default_rng(1)
X = RNG.normal(size=(60, 5))
LABELS = RNG.integers(0, 3, 60)

ESTIMATORS = {
    "classifier-adam": (lambda: fd.MLPClassifier((8,), max_iter=5, random_state=0), LABELS),
    "classifier-lbfgs": (lambda: fd.MLPClassifier((8,), solver="lbfgs", max_iter=5, random_state=0), LABELS == 1),
    "regressor-sgd": (lambda: fd.MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", max_iter=5, random_state=0), X[:, :2]),
}

# The child loads every file, predicts X (or fits the unfitted copy first) and saves the results.
CHILD = """
import pickle, sys, joblib, numpy as np, warnings
warnings.simplefilter("ignore")
folder = sys.argv[1]
X = np.load(folder + "/X.npy", allow_pickle=False)
for name in sys.argv[2:]:
    model = pickle.load(open(folder + "/" + name + ".pkl", "rb")) if name.endswith("pickle") else \\
        joblib.load(folder + "/" + name + ".joblib")
    if name.startswith("unfitted"):
        model.fit(X, np.load(folder + "/y-" + name + ".npy", allow_pickle=False))
    np.save(folder + "/out-" + name + ".npy", model.predict(X))
"""


def test_fitted_and_unfitted_estimators_load_in_a_fresh_process(tmp_path, backend):
    np.save(tmp_path / "X.npy", X)
    expected, names = {}, []
    for key, (make, y) in ESTIMATORS.items():
        for how in ("pickle", "joblib"):
            for state in ("fitted", "unfitted"):
                model = make().set_params(backend=backend)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if state == "fitted":
                        model.fit(X, y)
                    name = f"{state}-{key}-{how}"
                    if how == "pickle":
                        (tmp_path / f"{name}.pkl").write_bytes(pickle.dumps(model))
                    else:
                        joblib.dump(model, tmp_path / f"{name}.joblib")
                    if state == "unfitted":
                        np.save(tmp_path / f"y-{name}.npy", y)
                        model.fit(X, y)  # the copy fitted in the child must come out the same
                expected[name] = model.predict(X)
                names.append(name)
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), *names], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in names:
        np.testing.assert_array_equal(np.load(tmp_path / f"out-{name}.npy"), expected[name], err_msg=name)


def test_clone_is_unfitted_with_the_same_parameters():
    make, y = ESTIMATORS["classifier-lbfgs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = make().set_params(epsilon_added_to="sqrt_v", max_fun=99).fit(X, y)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and not hasattr(copy, "network_")
