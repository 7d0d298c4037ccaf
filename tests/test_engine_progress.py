"""progress_bar: a tqdm bar on a terminal only; redirected output keeps the plain iterable."""

import io
import sys

from ssdkit.engine.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_only_on_a_terminal(monkeypatch):
    items = [1, 2, 3]
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # redirected to a file: no bar, nothing written
    assert progress_bar(items, 3, "epoch 1", True) is items
    assert sys.stderr.getvalue() == ""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = progress_bar(items, 3, "epoch 1", True)
    assert bar is not items and list(bar) == items and "epoch 1" in terminal.getvalue()
    assert progress_bar(items, 3, "epoch 1", False) is items  # --no-progress
