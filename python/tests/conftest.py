"""Shared fixtures: the repository's bundled data and a scratch directory per test."""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def read_csv(name: str, label: str):
    """A bundled CSV as (features, labels)."""
    path = ROOT / "data" / name
    header = path.read_text().splitlines()[0].split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    column = header.index(label)
    return np.delete(table, column, axis=1), table[:, column]


@pytest.fixture
def iris():
    return read_csv("iris/iris.csv", "label")


@pytest.fixture
def digits():
    return read_csv("digits/digits.csv", "label")


@pytest.fixture
def diabetes():
    return read_csv("diabetes/diabetes.csv", "target")
