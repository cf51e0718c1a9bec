"""Breast cancer (scikit-learn's bundled Wisconsin data set): a search of 20 trials with
msh's scikit-learn estimator, its test accuracy, the trials table and the report.

    python python/examples/breast_cancer.py [RUN_DIR]
"""

import sys
import time

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import msh

X, y = load_breast_cancer(return_X_y=True, as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

clf = msh.MshClassifier(max_trials=20, epochs=20, random_state=0, run_dir=sys.argv[1] if len(sys.argv) > 1 else None)
started = time.perf_counter()
clf.fit(X_train, y_train)
print(f"search: {time.perf_counter() - started:.1f} s for {len(clf.run_.trials())} trials")
print(f"test accuracy: {clf.score(X_test, y_test):.4f}")
print(f"best trial {clf.best_['id']}: {','.join(b['name'] for b in clf.best_['architecture'])}")

trials = clf.run_.trials()
print(trials[["stage", "status", "valid_accuracy", "parameters", "epochs", "seconds", "architecture"]].to_string())
print(f"report: {clf.run_.report()}")
