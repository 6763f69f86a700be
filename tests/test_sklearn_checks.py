"""scikit-learn's own estimator checks (``check_estimator``) pass for both estimators, on every
engine with the stochastic solver and with L-BFGS, using their tags as declared (no sparse X)."""
import pytest

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fusedense as fd  # noqa: E402

# Small networks keep each check's fits short; the checks themselves pick the data.
ESTIMATORS = [cls(max_iter=100, backend=engine) for engine in fd.backends()
              for cls in (fd.MLPClassifier, fd.MLPRegressor)]
ESTIMATORS += [cls(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=15) for cls in (fd.MLPClassifier, fd.MLPRegressor)]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
