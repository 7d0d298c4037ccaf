"""The progress bar of training and evaluation passes (tqdm on stderr, or the plain iterable)."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(iterable, total: int, desc: str, enabled: bool):
    """A bar over ``iterable`` when ``enabled`` and stderr is a terminal: redirected to a file (``nohup``, a batch
    job's log) every redraw of a bar would be kept, thousands of lines per run, so there only the epoch lines are."""
    if not enabled or not _is_terminal(sys.stderr):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False
