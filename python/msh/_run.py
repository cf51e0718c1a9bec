"""Runs: starting a workflow with a progress bar, and reading a run's trials, best model and report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union

from ._engine import MshError, call, call_json, follow

PathLike = Union[str, Path]


class Run:
    """A run directory of msh (LMDB, or a PostgreSQL run whose URL is `store`)."""

    def __init__(self, run_dir: PathLike, store: Optional[str] = None):
        self.path = Path(run_dir)
        self.store = store

    def __repr__(self) -> str:
        return f"msh.Run({str(self.path)!r})"

    def _json(self, *args):
        return call_json(list(args), self.store)

    def status(self) -> dict:
        """Stages, trial counts by status, the best trial so far and the ETA (`msh status`)."""
        return self._json("status", self.path, "--json")

    def trial_records(self) -> list:
        """Every trial as the store records it (a list of dicts)."""
        return self._json("trials", self.path, "--json")

    def trials(self):
        """Every trial as a pandas DataFrame, one row per trial.

        Columns: id, stage, status (`stale` for a running trial whose worker is gone),
        objective, parameters, epochs, best_epoch, seconds,
        parent, architecture (block names joined by `,`), valid_/test_ metrics (loss,
        accuracy or mse/mae/r2), latency_ms, error, losses (the validation loss of every
        epoch, a list), and one column per hyper-parameter.
        """
        import pandas as pd

        rows = [_trial_row(t) for t in self.trial_records()]
        frame = pd.DataFrame(rows, columns=_columns(rows))
        for column in ("id", "parameters", "epochs", "best_epoch"):
            frame[column] = frame[column].astype("int64")
        frame["parent"] = frame["parent"].astype("Int64")
        return frame.set_index("id", drop=False)

    def best(self, stage: Optional[str] = None) -> dict:
        """The best completed trial (of `stage`, e.g. an ensemble stage), as a dict."""
        args = ["best", self.path, "--json"] + (["--stage", stage] if stage else [])
        return self._json(*args)

    def pareto(self):
        """The Pareto front of validation loss, parameters and latency, as a DataFrame."""
        import pandas as pd

        rows = [_trial_row(t) for t in self._json("best", self.path, "--pareto", "--json")]
        return pd.DataFrame(rows, columns=_columns(rows))

    def report(self, path: Optional[PathLike] = None) -> Path:
        """Writes the run's HTML report (default RUN/report.html) and returns its path."""
        out = Path(path) if path else self.path / "report.html"
        call(["report", self.path, "--output", out], self.store)
        return out

    def export(self, directory: PathLike, format: str = "all", stage: Optional[str] = None) -> Path:
        """Writes the best model (of `stage`) to `directory`: `model.onnx` and/or msh's files."""
        args = ["best", self.path, "--export", directory, "--format", format, "--json"]
        call(args + (["--stage", stage] if stage else []), self.store)
        return Path(directory)


_METRICS = ("loss", "accuracy", "mse", "mae", "r2")


def _trial_row(t: dict) -> dict:
    row = {
        "id": t["id"],
        "stage": t["stage"],
        # As `msh trials` shows it: a running trial whose worker is gone is `stale`.
        "status": "stale" if t.get("stale") else t["status"],
        "objective": t.get("objective"),
        "parameters": t.get("parameters", 0),
        "epochs": t.get("epochs", 0),
        "best_epoch": t.get("best_epoch", 0),
        "seconds": t.get("train_seconds", 0.0),
        "parent": t.get("parent"),
        "architecture": ",".join(b["name"] for b in t.get("architecture", [])),
    }
    for split in ("valid", "test"):
        metrics = t.get(split) or {}
        for name in _METRICS:
            row[f"{split}_{name}"] = metrics.get(name)
    row["latency_ms"] = t.get("latency_ms")
    row["error"] = t.get("error")
    row["losses"] = list(t.get("losses", []))
    for name, value in t.get("hparams", []):
        row[name] = value
    return row


def _columns(rows: list) -> list:
    fixed = ["id", "stage", "status", "objective", "parameters", "epochs", "best_epoch", "seconds", "parent"]
    fixed += ["architecture", *(f"{s}_{m}" for s in ("valid", "test") for m in _METRICS)]
    fixed += ["latency_ms", "error", "losses"]
    hparams = sorted({k for row in rows for k in row} - set(fixed))
    return fixed + hparams


class _Progress:
    """A tqdm bar per search stage, fed by the engine's events."""

    def __init__(self, show: bool):
        self.show = show
        self.bars = {}

    def __call__(self, event: dict) -> None:
        if not self.show:
            return
        from tqdm.auto import tqdm

        (kind, body), = event.items()
        if kind == "StageStarted":
            bar = tqdm(total=body.get("trials"), initial=body.get("done", 0), desc=body["stage"], unit="trial")
            self.bars[body["stage"]] = bar
        elif kind == "TrialFinished":
            bar = self.bars.get(body["stage"])
            if bar is not None:
                trial = body["trial"]
                bar.update(1)
                if trial.get("objective") is not None:
                    bar.set_postfix(trial=trial["id"], loss=f"{trial['objective']:.4f}")
        elif kind == "StageFinished":
            bar = self.bars.pop(body["stage"], None)
            if bar is not None:
                bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def run(
    workflow: PathLike,
    run_dir: Optional[PathLike] = None,
    trainers: Optional[int] = None,
    backend: Optional[str] = None,
    threads: Optional[int] = None,
    store: Optional[str] = None,
    progress: bool = True,
    on_event=None,
) -> Run:
    """Runs (or resumes) a workflow to its end and returns the `Run`.

    `run_dir` defaults to `runs/<workflow name>`; `on_event(event)` sees every engine event
    (a dict such as `{"TrialFinished": {...}}`). Ctrl-C stops the run cleanly (raising
    `msh.Interrupted`); the same call resumes it.
    """
    workflow = Path(workflow)
    if run_dir is None:
        run_dir = Path("runs") / _workflow_name(workflow)
    args = ["run", workflow, "--run-dir", run_dir]
    for flag, value in (("--trainers", trainers), ("--backend", backend), ("--threads", threads)):
        if value is not None:
            args += [flag, value]
    bar = _Progress(progress)

    def handle(event: dict) -> None:
        bar(event)
        if on_event is not None:
            on_event(event)

    try:
        follow(args, handle, store)
    finally:
        bar.close()
    return Run(run_dir, store)


def _workflow_name(workflow: Path) -> str:
    """The workflow's top-level `name:`, where the engine puts its run by default."""
    try:
        text = workflow.read_text()
    except OSError as e:
        raise MshError(f"cannot read workflow {workflow}: {e.strerror}", file=str(workflow)) from None
    for line in text.splitlines():
        match = re.match(r"name:\s*(['\"]?)([^'\"#]+?)\1\s*(#.*)?$", line)
        if match:
            return match.group(2)
    raise MshError(f"{workflow}: no top-level `name:`; pass run_dir", file=str(workflow))


def open(run_dir: PathLike, store: Optional[str] = None) -> Run:  # noqa: A001 (msh.open)
    """An existing (or running) run; `store` is its PostgreSQL URL when the recorded one
    lacks the password."""
    run = Run(run_dir, store)
    if not (Path(run_dir) / "store").is_dir() and not (Path(run_dir) / "store.json").is_file():
        raise MshError(f"{run_dir} is not a run directory (no store/ and no store.json)")
    return run
