"""scikit-learn estimators: `fit` writes the data and a workflow into a run directory, runs
the search with the msh engine, and keeps the exported ONNX model; `predict` runs it."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ._engine import MshError, call
from ._run import Run, run as run_workflow

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted
except ImportError as e:  # pragma: no cover - the estimators need scikit-learn
    raise ImportError("msh's estimators need scikit-learn: pip install 'msh[sklearn]'") from e

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

#: Samples a fit needs at least: some to train on and some to validate with.
MIN_SAMPLES = 10

#: Blocks of core-blocks searched by default, by the rank of one sample.
DEFAULT_BLOCKS = {
    1: ["dense", "dense_residual", "dense_bn", "low_rank_dense", "bottleneck"],
    2: ["fixed_conv", "increase_channels_conv", "downsample_conv", "resnet", "dilated_conv", "max_pool", "lstm", "gru"],
    3: ["fixed_conv", "increase_channels_conv", "downsample_conv", "resnet", "dilated_conv", "max_pool"],
}


class _MshEstimator(BaseEstimator):
    _task = "classification"

    def __init__(
        self,
        blocks: Optional[Sequence[str]] = None,
        max_trials: int = 10,
        time_limit: Optional[float] = None,
        searcher: str = "local-search",
        early_stopping: bool = True,
        ensemble: Optional[str] = None,
        trainers: int = 1,
        epochs: int = 10,
        batch_size: int = 64,
        max_depth: int = 3,
        channels_last: bool = False,
        run_dir: Optional[str] = None,
        backend: str = "cpu",
        threads: Optional[int] = None,
        random_state: int = 0,
        verbose: bool = False,
    ):
        self.blocks = blocks
        self.max_trials = max_trials
        self.time_limit = time_limit
        self.searcher = searcher
        self.early_stopping = early_stopping
        self.ensemble = ensemble
        self.trainers = trainers
        self.epochs = epochs
        self.batch_size = batch_size
        self.max_depth = max_depth
        self.channels_last = channels_last
        self.run_dir = run_dir
        self.backend = backend
        self.threads = threads
        self.random_state = random_state
        self.verbose = verbose

    # Input checks and layouts.

    def _check_X(self, X, reset: bool, y="no_validation"):
        """X (and y, when given: fitting) checked, X as float32 channels-first samples."""
        kwargs = dict(allow_nd=True, dtype=np.float32, ensure_min_samples=1)
        if reset:
            X, y = _validate_data(self, X, y, reset=True, y_numeric=self._task == "regression", **kwargs)
        else:
            X = _validate_data(self, X, reset=False, **kwargs)
        if X.ndim == 4 and self.channels_last:
            X = np.ascontiguousarray(X.transpose(0, 3, 1, 2))
        if X.ndim > 4:
            raise ValueError(f"X has {X.ndim} axes; msh takes [N, F], [N, C, L] or [N, C, H, W] samples")
        if reset:
            self.sample_shape_ = list(X.shape[1:])
        elif list(X.shape[1:]) != self.sample_shape_:
            raise ValueError(f"X has samples of shape {list(X.shape[1:])}, but the model was fitted on {self.sample_shape_}")
        return X, y

    def workflow_yaml(self, sample_shape: Optional[Sequence[int]] = None, data: str = "data.npz") -> str:
        """The workflow `fit` runs, for samples of `sample_shape` (default: the fitted one)."""
        shape = list(sample_shape if sample_shape is not None else getattr(self, "sample_shape_", []))
        if not shape:
            raise ValueError("workflow_yaml needs a sample shape before the estimator is fitted")
        blocks = list(self.blocks) if self.blocks else DEFAULT_BLOCKS[min(len(shape), 3)]
        lines = [
            f"name: sklearn-{self._task}",
            f"seed: {int(self.random_state or 0)}",
            "data:",
            f"  source: npz:{data}",
            f"  shape: {json.dumps(shape)}",
            f"  task: {self._task}",
            "  valid_fraction: 0.2",
            "  test_fraction: 0.0",
            "space:",
            "  packs: [core-blocks]",
            f"  blocks: [{', '.join(blocks)}]",
            "  min_depth: 1",
            f"  max_depth: {int(self.max_depth)}",
            "  hparams:",
            "    learning_rate: {low: 0.0005, high: 0.01, log: true}",
            f"searcher: {{plugin: {self.searcher}}}",
            f"training: {{epochs: {int(self.epochs)}, batch_size: {int(self.batch_size)}}}",
            f"trainers: {{count: {int(self.trainers)}, backend: {self.backend}"
            + (f", threads: {int(self.threads)}" if self.threads else "")
            + "}",
            f"budget: {{trials: {int(self.max_trials)}"
            + (f", wall_time: {max(1, int(self.time_limit))}" if self.time_limit else "")
            + "}",
        ]
        if self.early_stopping:
            lines += ["early_stopping: {mode: asha, grace_epochs: 2, min_trials: 4}"]
        lines += ["stages:", "  search: {kind: search}"]
        if self.ensemble:
            lines += [f"  ensemble: {{kind: ensemble, needs: [search], method: {self.ensemble}, top_k: 3}}"]
        lines += [f"  export: {{kind: export, needs: [{'ensemble' if self.ensemble else 'search'}]}}"]
        return "\n".join(lines) + "\n"

    # Fitting.

    def _targets(self, y):
        return np.asarray(y, dtype=np.float32)

    def fit(self, X, y):
        """Searches architectures for (X, y) and keeps the best model (or ensemble)."""
        X, y = self._check_X(X, reset=True, y=y)
        if X.shape[0] < MIN_SAMPLES:
            raise ValueError(
                f"got {X.shape[0]} sample(s); msh needs at least {MIN_SAMPLES} to train and validate on"
            )
        targets = self._targets(y)
        workflow = self.workflow_yaml()
        digest = hashlib.sha256(X.tobytes() + targets.tobytes() + workflow.encode()).hexdigest()[:16]
        # One run directory per data and workflow: the same fit again resumes it, other data
        # (a cross-validation fold, say) gets a run of its own.
        base = Path(self.run_dir) if self.run_dir else Path(tempfile.mkdtemp(prefix="msh-fit-"))
        run_dir = base / digest if self.run_dir else base
        run_dir.mkdir(parents=True, exist_ok=True)
        np.savez(run_dir / "data.npz", x=X, y=targets)
        (run_dir / "workflow.yaml").write_text(workflow)
        self.run_ = run_workflow(run_dir / "workflow.yaml", run_dir=run_dir / "run", progress=self.verbose)
        export = run_dir / "run" / "export"
        onnx_file = export / "model.onnx"
        if not onnx_file.is_file():
            raise MshError(f"the search ended without a model in {export} (see `msh status {run_dir / 'run'}`)")
        self.model_dir_ = export
        self.onnx_model_ = onnx_file.read_bytes()
        self.best_ = json.loads((export / "trial.json").read_text())
        self._session = _onnx_session(self.onnx_model_)
        return self

    # Prediction: ONNX Runtime in process where it is installed, else `msh predict`.

    # The ONNX Runtime session is made when the model arrives (fit, unpickling), so that
    # predicting changes nothing in the estimator.
    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_session", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "onnx_model_" in state:
            self._session = _onnx_session(self.onnx_model_)

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "onnx_model_")
        X, _ = self._check_X(X, reset=False)
        flat = X.reshape(X.shape[0], -1)
        if getattr(self, "_session", None) is None:
            return self._predict_with_engine(flat)
        (out,) = self._session.run([self._output_name], {"input": flat})
        return out

    def _predict_with_engine(self, flat: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="msh-predict-") as tmp:
            data, out = Path(tmp) / "x.npz", Path(tmp) / "p.csv"
            np.savez(data, x=flat.reshape(flat.shape[0], *self.sample_shape_), y=np.zeros(len(flat), np.float32))
            call(["predict", self.model_dir_, "--data", f"npz:{data}", "--output", out, "--probabilities"])
            rows = list(csv.reader(io.StringIO(out.read_text())))
        header, body = rows[0], rows[1:]
        if self._task == "regression":
            return np.array([[float(r[0])] for r in body], dtype=np.float32)
        columns = [i for i, name in enumerate(header) if name.startswith("p_")]
        return np.array([[float(r[i]) for i in columns] for r in body], dtype=np.float32)


def _onnx_session(model: bytes):
    """An ONNX Runtime session of `model`, or None where onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


class MshClassifier(ClassifierMixin, _MshEstimator):
    """Neural architecture search for classification, as a scikit-learn estimator.

    `fit(X, y)` takes samples of any shape: `[N, F]` features, `[N, C, L]` sequences,
    `[N, C, H, W]` images (or `[N, H, W, C]` with `channels_last=True`); labels of any
    kind. Fitted attributes: `classes_`, `run_` (an `msh.Run` with every trial),
    `best_` (the chosen trial), `onnx_model_` (the model as ONNX bytes).
    """

    _task = "classification"
    _output_name = "probabilities"

    def _targets(self, y):
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"got 1 class ({self.classes_[0]!r}); a classifier needs at least 2 classes")
        return encoded.astype(np.float32)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in the order of `classes_`."""
        return self._outputs(X)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class MshRegressor(RegressorMixin, _MshEstimator):
    """Neural architecture search for regression, as a scikit-learn estimator (see
    `MshClassifier` for the parameters and fitted attributes)."""

    _task = "regression"
    _output_name = "values"

    def predict(self, X) -> np.ndarray:
        return self._outputs(X)[:, 0]
