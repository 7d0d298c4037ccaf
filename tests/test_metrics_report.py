"""ssdkit.metrics.report: the AP table and the strict-JSON dict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssdkit.metrics import format_ap_table, metrics_to_dict


def test_format_ap_table():
    text = format_ap_table(["aeroplane", "bus", "mAP"], [0.71234, float("nan"), 0.5], title="VOC07")
    lines = text.splitlines()
    assert lines[0] == "VOC07" and lines[1] == ""
    assert lines[2].startswith("| class") and set(lines[3]) <= set("|:- ")
    assert "| aeroplane | 0.7123 |" in lines and "| bus       |      - |" in lines
    assert lines[-1] == "| mAP       | 0.5000 |"
    assert len({len(line) for line in lines[2:]}) == 1  # fixed width
    with pytest.raises(ValueError):
        format_ap_table(["a"], [0.1, 0.2])


def test_metrics_to_dict_is_strict_json():
    d = metrics_to_dict(["a", "b", "mAP"], [0.25, float("nan"), np.float64(0.25)])
    assert list(d) == ["a", "b", "mAP"] and d["b"] is None
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    with pytest.raises(ValueError):
        metrics_to_dict(["a", "a"], [0.1, 0.2])
