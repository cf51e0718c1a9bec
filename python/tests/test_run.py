"""Runs from Python: events while the run goes on, trials as a DataFrame, the best model,
the report and exports; the engine's errors as `msh.MshError`."""


import numpy as np
import pandas as pd
import pytest

import msh
from conftest import ROOT

WORKFLOW = f"""name: py-run
seed: 2
data:
  source: csv:{ROOT}/data/mnist1d/train.csv
  test: csv:{ROOT}/data/mnist1d/test.csv
  shape: [1, 40]
  subset: 500
space:
  blocks: [fixed_conv, resnet, max_pool]
  min_depth: 1
  max_depth: 2
  hparams:
    learning_rate: {{low: 0.001, high: 0.01, log: true}}
searcher: {{plugin: random-search}}
training: {{epochs: 2, batch_size: 64}}
trainers: {{count: 1, backend: cpu}}
budget: {{trials: 4}}
stages:
  search: {{kind: search}}
  export: {{kind: export, needs: [search]}}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run of four trials, with every event it sent, each with whether the engine was
    still running when it arrived."""
    tmp = tmp_path_factory.mktemp("run")
    workflow = tmp / "w.yaml"
    workflow.write_text(WORKFLOW)
    events = []
    run = msh.run(workflow, run_dir=tmp / "run", progress=True, on_event=lambda e: events.append((e, any(_children()))))
    return run, events


def test_events_arrive_while_the_run_goes_on(finished):
    run, sent = finished
    events = [e for e, _ in sent]
    # Streamed, not read at the end: all but the last arrive while the engine still runs.
    assert all(running for _, running in sent[:-1])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "StageStarted"
    assert kinds.count("TrialFinished") == 4
    assert kinds.index("TrialStarted") < kinds.index("TrialFinished")
    assert "TrialEpoch" in kinds and kinds[-1] == "StageFinished"
    finished_trial = next(e["TrialFinished"]["trial"] for e in events if "TrialFinished" in e)
    assert finished_trial["status"] == "completed" and finished_trial["valid"]["accuracy"] > 0


def test_trials_are_a_dataframe_with_one_row_per_trial(finished):
    run, _ = finished
    trials = run.trials()
    assert len(trials) == 4
    for column in ("id", "stage", "status", "objective", "valid_accuracy", "test_accuracy", "parameters",
                   "epochs", "seconds", "parent", "architecture", "losses", "learning_rate"):
        assert column in trials.columns, column
    assert trials["parameters"].dtype == np.int64 and trials["epochs"].dtype == np.int64
    assert trials["seconds"].dtype == np.float64 and trials["learning_rate"].dtype == np.float64
    assert str(trials["parent"].dtype) == "Int64"
    assert (trials["status"] == "completed").all()
    assert all(isinstance(l, list) and len(l) == 2 for l in trials["losses"])
    assert trials["architecture"].str.len().min() > 0


def test_best_status_pareto_report_and_export(finished, tmp_path):
    run, _ = finished
    best = run.best()
    assert best["objective"] == run.trials()["objective"].min()
    status = run.status()
    assert status["workflow"] == "py-run" and status["trials"]["completed"] == 4
    assert {s["name"]: s["state"] for s in status["stages"]} == {"search": "done", "export": "done"}
    assert isinstance(run.pareto(), pd.DataFrame) and len(run.pareto()) >= 1
    report = run.report(tmp_path / "r.html")
    assert report.read_text().startswith("<!DOCTYPE html>")
    out = run.export(tmp_path / "best", format="onnx")
    assert (out / "model.onnx").is_file() and not (out / "model.json").exists()
    assert (run.path / "export" / "model.onnx").is_file()
    assert repr(msh.open(run.path)) == f"msh.Run({str(run.path)!r})"


def test_the_engines_errors_are_located(tmp_path):
    workflow = tmp_path / "bad.yaml"
    workflow.write_text(WORKFLOW.replace("max_depth: 2", "max_depht: 2"))
    with pytest.raises(msh.MshError) as caught:
        msh.run(workflow, run_dir=tmp_path / "run", progress=False)
    error = caught.value
    assert error.file == str(workflow) and error.line == 11 and error.column == 3, error
    assert "max_depht" in error.message
    with pytest.raises(msh.MshError, match="is not a run directory"):
        msh.open(tmp_path)


def test_a_killed_engine_raises_instead_of_hanging(tmp_path):
    workflow = tmp_path / "w.yaml"
    workflow.write_text(WORKFLOW.replace("trials: 4", "trials: 40"))
    killed = []

    def kill_on_first_trial(event):
        if "TrialStarted" in event and not killed:
            import os
            import signal

            # The engine is the only child process of this one that reports events.
            for pid in _children():
                os.kill(pid, signal.SIGKILL)
            killed.append(True)

    with pytest.raises(msh.MshError, match="killed by signal 9"):
        msh.run(workflow, run_dir=tmp_path / "run", progress=False, on_event=kill_on_first_trial)


def _children():
    """This process's live (not zombie) child processes."""
    import os

    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[1] == me and stat[0] != "Z":
                yield int(pid)


def test_a_postgresql_run(tmp_path):
    """`store=` runs in PostgreSQL (`.ci/run` starts a server and sets MSH_TEST_POSTGRES)."""
    import os

    url = os.environ.get("MSH_TEST_POSTGRES")
    if not url:
        pytest.skip("MSH_TEST_POSTGRES is not set (bash .ci/postgres prints a URL)")
    workflow = tmp_path / "w.yaml"
    workflow.write_text(WORKFLOW.replace("name: py-run", f"name: py-pg-{os.getpid()}").replace("trials: 4", "trials: 2"))
    run = msh.run(workflow, run_dir=tmp_path / "run", store=url, progress=False)
    assert (run.path / "store.json").is_file() and not (run.path / "store").exists()
    trials = msh.open(run.path, store=url).trials()
    assert len(trials) == 2 and (trials["status"] == "completed").all()


def test_ctrl_c_stops_the_run_and_the_same_call_resumes_it(tmp_path):
    workflow = tmp_path / "w.yaml"
    workflow.write_text(WORKFLOW.replace("trials: 4", "trials: 6"))

    def ctrl_c_after_two_trials(event, finished=[]):
        if "TrialFinished" in event:
            finished.append(event)
            if len(finished) == 2:
                raise KeyboardInterrupt  # what a notebook's interrupt raises in this loop

    with pytest.raises(msh.Interrupted, match="resume"):
        msh.run(workflow, run_dir=tmp_path / "run", progress=False, on_event=ctrl_c_after_two_trials)
    stopped = msh.open(tmp_path / "run").trials()
    kept = stopped[stopped["status"] == "completed"]
    assert 2 <= len(kept) < 6 and not (stopped["status"] == "running").any()
    run = msh.run(workflow, run_dir=tmp_path / "run", progress=False)
    trials = run.trials()
    assert len(trials) == 6 and (trials["status"] == "completed").all()
    assert list(trials.loc[kept.index, "seconds"]) == list(kept["seconds"])


def test_a_trial_whose_worker_is_gone_is_stale_in_the_frame():
    from msh._run import _trial_row

    record = {"id": 3, "stage": "search", "status": "running",
              "stale": {"worker": "box pid 7 trainer 0", "lease_until": 1.0, "reason": "lease expired"}}
    assert _trial_row(record)["status"] == "stale"
    assert _trial_row({**record, "stale": None})["status"] == "running"
