"""The breast-cancer example runs as a user would run it, and its search is worth having."""

import re
import subprocess
import sys

from conftest import ROOT


def test_breast_cancer_example(tmp_path):
    script = ROOT / "python" / "examples" / "breast_cancer.py"
    done = subprocess.run([sys.executable, script, tmp_path], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    print(out)
    assert re.search(r"search: [\d.]+ s for 20 trials", out), out
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", out).group(1))
    assert accuracy > 0.9, out
    report = re.search(r"report: (\S+)", out).group(1)
    assert open(report).read().startswith("<!DOCTYPE html>")
