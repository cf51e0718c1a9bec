"""msh from Python: run workflows, read runs as DataFrames, and search architectures with
scikit-learn's `fit`/`predict`. The engine is the `msh` binary; this package drives it and
reads what it writes.

    import msh
    run = msh.run("workflows/quickstart.yaml")
    run.trials()                      # a pandas DataFrame, one row per trial
    clf = msh.MshClassifier(max_trials=20).fit(X, y)
"""

from ._engine import Interrupted, MshError, find_engine
from ._run import Run, open, run

__all__ = ["MshClassifier", "MshRegressor", "MshError", "Interrupted", "Run", "run", "open", "find_engine"]
__version__ = "0.1.0"


def __getattr__(name):
    # The estimators need scikit-learn, an extra: imported when first asked for.
    if name in ("MshClassifier", "MshRegressor"):
        from . import _estimator

        return getattr(_estimator, name)
    raise AttributeError(f"module 'msh' has no attribute {name!r}")
