"""The progress bar of training and evaluation passes (tqdm on stderr, or the plain iterable)."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
