"""ssdkit.metrics.legacy_sort against NumPy 1.23's argsort (fixtures written under GluonCV's NumPy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssdkit.metrics import legacy_sort
from ssdkit.metrics.legacy_sort import legacy_argsort, stable_argsort

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]


fixtures = load_tool("make_metric_fixtures")
SORT_REF = np.load(ROOT / "tests" / "data" / "metric_sort.npz")
SORT_CASES = fixtures.make_sort_cases()


@pytest.mark.parametrize("i", range(len(SORT_CASES)))
def test_legacy_argsort_is_numpy_1_23(i):
    values = SORT_CASES[i]
    np.testing.assert_array_equal(legacy_argsort(values), SORT_REF[f"quicksort_{i}"])


def test_introsort_depth_limit_falls_back_to_heapsort_like_numpy(monkeypatch):
    """The adversarial fixture cases reach NumPy's heapsort fallback, and so does legacy_argsort."""
    calls = []
    real = legacy_sort._heapsort_segment
    monkeypatch.setattr(legacy_sort, "_heapsort_segment", lambda *a: (calls.append(a[3] - a[2] + 1), real(*a)))
    for i in range(len(SORT_CASES) - fixtures.NUM_ADVERSARIAL_SORT_CASES, len(SORT_CASES)):
        calls.clear()
        np.testing.assert_array_equal(legacy_argsort(SORT_CASES[i]), SORT_REF[f"quicksort_{i}"])
        assert calls and max(calls) > 16


def test_legacy_heapsort_is_numpy_1_23():
    for i, values in enumerate(SORT_CASES):
        ranks = np.unique(values, return_inverse=True)[1].reshape(-1)
        perm = np.arange(values.size)
        legacy_sort._heapsort_segment(ranks, perm, 0, values.size - 1)
        np.testing.assert_array_equal(perm, SORT_REF[f"heapsort_{i}"])


def test_legacy_argsort_key_only_orders_distinguishable_ties():
    rs = np.random.RandomState(5)
    values = rs.randint(0, 30, size=2000).astype(np.float32)
    key = rs.randint(0, 2, size=2000)
    exact = legacy_argsort(values)
    keyed = legacy_argsort(values, key=key)
    np.testing.assert_array_equal(values[keyed], values[exact])
    np.testing.assert_array_equal(key[keyed], key[exact])


# --------------------------------------------------------------------------------------------------
# Hand-computed cases


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
@pytest.mark.parametrize("descending", [False, True])
def test_stable_argsort_is_numpys_stable_sort(dtype, descending):
    values = np.random.RandomState(3).randint(0, 40, size=500).astype(dtype)
    if dtype == np.float32:
        values[:3] = [-0.0, 0.0, -5.5]
    ref = np.argsort(values, kind="stable")
    np.testing.assert_array_equal(stable_argsort(values, descending), ref[::-1] if descending else ref)
