"""The scikit-learn estimators end to end on bundled data: layouts, DataFrames, regression,
cross-validation, clones, resumes, predictions without ONNX Runtime, and bad inputs."""

import os
import pickle
import signal
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

import msh
from test_run import _children

# Small searches: the tests check the plumbing, the searches are the engine's.
SMALL = dict(max_trials=3, epochs=6, early_stopping=False, random_state=1)


def test_iris_fit_predict_and_probabilities(iris, tmp_path):
    X, y = iris
    clf = msh.MshClassifier(**SMALL, run_dir=str(tmp_path)).fit(X, y)
    assert list(clf.classes_) == [0.0, 1.0, 2.0] and clf.n_features_in_ == 4
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert clf.score(X, y) > 0.7
    assert len(clf.run_.trials()) == 3
    assert "blocks: [dense, " in clf.workflow_yaml()
    # A fitted estimator pickles with its model: no file of the run is needed to predict.
    again = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(again.predict(X), clf.predict(X))


def test_string_labels_and_a_dataframe(iris, tmp_path):
    X, y = iris
    frame = pd.DataFrame(X, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    names = np.array(["setosa", "versicolor", "virginica"])[y.astype(int)]
    clf = msh.MshClassifier(**SMALL, run_dir=str(tmp_path)).fit(frame, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    assert list(clf.feature_names_in_) == list(frame.columns)
    assert set(clf.predict(frame)) <= set(names)
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame.rename(columns={"petal_width": "width"}))


def test_images_in_both_layouts(digits, tmp_path):
    X, y = digits
    first = X.reshape(-1, 1, 8, 8)[:600]
    last = first.transpose(0, 2, 3, 1)
    a = msh.MshClassifier(**SMALL, run_dir=str(tmp_path)).fit(first, y[:600])
    b = msh.MshClassifier(**SMALL, run_dir=str(tmp_path), channels_last=True).fit(last, y[:600])
    assert a.sample_shape_ == b.sample_shape_ == [1, 8, 8]
    assert "fixed_conv" in a.workflow_yaml()
    # The same data and workflow: the same run, resumed, and the same predictions.
    assert np.array_equal(a.predict(first), b.predict(last))
    assert a.score(first, y[:600]) > 0.5


def test_regression_on_diabetes(diabetes, tmp_path):
    X, y = diabetes
    reg = msh.MshRegressor(**SMALL, run_dir=str(tmp_path)).fit(X, y)
    predictions = reg.predict(X)
    assert predictions.shape == (len(y),) and predictions.dtype == np.float32
    # Values come back in the target's units (diabetes progression, 25..346).
    assert 50 < predictions.mean() < 250
    assert reg.score(X, y) > 0.2


def test_cross_validation_and_clone(iris):
    X, y = iris
    clf = msh.MshClassifier(**SMALL)
    scores = cross_val_score(clf, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.5
    copy = clone(clf)
    assert copy.get_params() == clf.get_params() and not hasattr(copy, "classes_")


def test_predictions_through_the_engine_without_onnxruntime(iris, tmp_path, monkeypatch):
    X, y = iris
    clf = msh.MshClassifier(**SMALL, run_dir=str(tmp_path)).fit(X, y)
    expected = clf.predict_proba(X)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    clf._session = None
    assert np.allclose(clf.predict_proba(X), expected, atol=1e-4)


def test_a_fit_killed_midway_resumes(iris, tmp_path, monkeypatch):
    X, y = iris
    clf = msh.MshClassifier(**SMALL, run_dir=str(tmp_path))
    original = msh._estimator.run_workflow

    def killed_after_one_trial(*args, **kwargs):
        def on_event(event):
            if "TrialFinished" in event:
                for pid in _children():
                    os.kill(pid, signal.SIGKILL)

        return original(*args, **kwargs, on_event=on_event)

    monkeypatch.setattr(msh._estimator, "run_workflow", killed_after_one_trial)
    with pytest.raises(msh.MshError, match="killed"):
        clf.fit(X, y)
    monkeypatch.setattr(msh._estimator, "run_workflow", original)
    before = msh.open(next(tmp_path.glob("*/run"))).trials()
    done = before[before["status"] == "completed"]
    assert len(done) >= 1
    clf.fit(X, y)
    trials = clf.run_.trials()
    # What finished before the kill is kept, not trained again; the rest ran now.
    assert len(trials) == 3 and (trials["status"] == "completed").all()
    assert list(trials.loc[done.index, "seconds"]) == list(done["seconds"])
    assert clf.predict(X).shape == (150,)
    first_run = clf.run_.path
    clf.fit(X, y)
    assert clf.run_.path == first_run and len(clf.run_.trials()) == 3


def test_bad_inputs_are_python_errors(iris):
    X, y = iris
    clf = msh.MshClassifier(**SMALL)
    with_nan = X.copy()
    with_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(with_nan, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="0 sample"):
        clf.fit(np.empty((0, 4)), np.empty(0))
    with pytest.raises(ValueError, match="1 class"):
        clf.fit(X[:20], np.zeros(20))
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X, y + 0.5)
    with pytest.raises(Exception, match="not fitted"):
        clf.predict(X)


def test_an_ensemble_is_kept_as_one_model(iris, tmp_path):
    X, y = iris
    clf = msh.MshClassifier(**SMALL, ensemble="greedy", run_dir=str(tmp_path)).fit(X, y)
    assert clf.best_["members"] and clf.best_["stage"] == "ensemble"
    assert "method: greedy" in clf.workflow_yaml()
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
