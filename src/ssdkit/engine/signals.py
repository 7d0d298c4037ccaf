"""SIGTERM as a stop request that the training loop reads between steps."""

from __future__ import annotations

import signal
import threading

__all__ = ["StopOnSignal"]


class StopOnSignal:
    """Turns SIGTERM (what schedulers send before preemption) into a request the loop reads between steps."""

    def __init__(self):
        self.requested = ""
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = "SIGTERM"

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
