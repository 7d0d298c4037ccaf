"""Per-class AP tables: a fixed-width Markdown table for logs and READMEs, and a dict for JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["format_ap_table", "metrics_to_dict"]


def _check(names: Sequence[str], values: Sequence[float]) -> list[float]:
    if len(names) != len(values):
        raise ValueError(f"{len(names)} names but {len(values)} values")
    if len(set(names)) != len(names):
        raise ValueError("metric names must be unique")
    out = []
    for name, value in zip(names, values):
        try:
            out.append(float(value))
        except (TypeError, ValueError) as err:
            raise ValueError(f"metric {name!r} has a non-numeric value {value!r}") from err
    return out


def format_ap_table(names: Sequence[str], values: Sequence[float], title: str | None = None, digits: int = 4) -> str:
    """A Markdown table (aligned, so it also reads as plain text) of ``(names, values)`` as returned by a
    metric's ``get()``: one row per entry in order, so the summary (mAP / AP) comes last.

    nan values (classes without ground truth) print as ``-``.
    """
    vals = _check(names, values)
    cells = ["-" if math.isnan(v) else f"{v:.{digits}f}" for v in vals]
    name_w = max([len("class")] + [len(n) for n in names])
    val_w = max([len("AP")] + [len(c) for c in cells])
    lines = []
    if title:
        lines += [title, ""]
    lines.append(f"| {'class':<{name_w}} | {'AP':>{val_w}} |")
    lines.append(f"|:{'-' * (name_w + 1)}|{'-' * (val_w + 1)}:|")
    for name, cell in zip(names, cells):
        lines.append(f"| {name:<{name_w}} | {cell:>{val_w}} |")
    return "\n".join(lines)


def metrics_to_dict(names: Sequence[str], values: Sequence[float]) -> dict[str, float | None]:
    """``{name: value}`` in the metric's order, with nan as None so that strict JSON can hold it."""
    vals = _check(names, values)
    return {name: (None if math.isnan(v) else v) for name, v in zip(names, vals)}
