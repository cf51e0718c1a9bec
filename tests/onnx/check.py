"""Checks exported ONNX models with ONNX's checker and ONNX Runtime.

Usage: python tests/onnx/check.py MANIFEST.json

The manifest lists models as {"name", "model", "data", "label", "expected"}: `data` is a
CSV with a header whose column named `label` is dropped and whose other columns are the
raw features; `expected` is what `msh predict --output FILE --probabilities` writes (columns
`p_<class>` for classification, else `prediction`). Prints one JSON line per model with
the largest difference between ONNX Runtime's outputs and the expected ones: absolute
for probabilities, relative to max(1, |value|) for regression values.
"""

import csv
import json
import sys

import numpy as np
import onnx
import onnxruntime


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def features(path, label):
    header, rows = read_csv(path)
    keep = [i for i, name in enumerate(header) if name != label]
    return np.array([[float(row[i]) for i in keep] for row in rows], dtype=np.float32)


def expected(path):
    header, rows = read_csv(path)
    columns = [i for i, name in enumerate(header) if name.startswith("p_")]
    if not columns:
        columns = [header.index("prediction")]
    return np.array([[float(row[i]) for i in columns] for row in rows], dtype=np.float64)


def check(entry):
    model = onnx.load(entry["model"])
    onnx.checker.check_model(model, full_check=True)
    session = onnxruntime.InferenceSession(entry["model"], providers=["CPUExecutionProvider"])
    x = features(entry["data"], entry["label"])
    outputs = [o.name for o in session.get_outputs()]
    got = dict(zip(outputs, session.run(None, {"input": x})))
    want = expected(entry["expected"])
    classification = "probabilities" in got
    ours = got["probabilities"] if classification else got["values"]
    if ours.shape != want.shape:
        raise SystemExit(f"{entry['name']}: ONNX Runtime gave {ours.shape}, msh {want.shape}")
    scale = 1.0 if classification else np.maximum(1.0, np.abs(want))
    return {
        "name": entry["name"],
        "rows": int(x.shape[0]),
        "max_diff": float(np.max(np.abs(ours.astype(np.float64) - want) / scale)),
        "inputs": [(i.name, i.shape) for i in session.get_inputs()],
        "outputs": outputs,
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "metadata": {p.key: p.value for p in model.metadata_props},
        "bytes": model.ByteSize(),
    }


def main():
    with open(sys.argv[1]) as f:
        manifest = json.load(f)
    for entry in manifest:
        print(json.dumps(check(entry)), flush=True)


if __name__ == "__main__":
    main()
