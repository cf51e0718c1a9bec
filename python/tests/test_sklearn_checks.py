"""scikit-learn's own estimator checks, every one that applies (each fit is a real search)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

import msh

# Small, single-threaded searches: a check fits many times, and fits of the same data with
# the same seed must agree.
ESTIMATORS = [
    msh.MshClassifier(max_trials=2, epochs=8, early_stopping=False, threads=1),
    msh.MshRegressor(max_trials=2, epochs=8, early_stopping=False, threads=1),
]


@parametrize_with_checks(ESTIMATORS)
def test_scikit_learn_checks(estimator, check):
    check(estimator)
