"""Bad-sample handling shared by every ssdkit data set.

A *bad sample* is a file the pipeline cannot use as is: a missing or undecodable image, an
annotation file that does not parse, or a box that is NaN, degenerate, outside the image or has an
unknown class. Problems are always reported with the file name.

Two policies, chosen with ``on_bad_sample``:

``"error"``
    raise :class:`BadSampleError` naming the file and the problem.
``"skip"``
    annotation problems found at construction drop the offending box (or file) and are recorded
    in the data set's :class:`BadSampleLog` (and logged as a warning); an image that fails while
    loading in ``__getitem__`` is replaced by the next valid index and recorded.

Across DataLoader worker processes each worker holds its own copy of the data set, so its log is
lost. To keep the report, every item produced under ``"skip"`` carries the problems met while
producing it in ``target["bad_samples"]`` (a list of ``(path, reason)``);
:func:`ssdkit.data.collate.detection_collate` gathers them into ``batch["bad_samples"]`` and the
main process adds them to its log with :meth:`BadSampleLog.record_batch`. The log keeps each
``(path, reason)`` once, so the same problem seen in several places is not counted twice.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["BadSampleError", "BadSampleLog", "SkipBadSamples", "check_policy", "load_with_policy", "attach_problems"]

LOGGER = logging.getLogger("ssdkit.data")
POLICIES = ("skip", "error")


class BadSampleError(ValueError):
    """A sample (image or annotation file) that cannot be used. ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # keep (path, reason) when the error crosses a worker process boundary
        return type(self), (self.path, self.reason)


def check_policy(on_bad_sample: str) -> str:
    """Validate an ``on_bad_sample`` argument (``"skip"`` or ``"error"``) and return it."""
    if on_bad_sample not in POLICIES:
        raise ValueError(f"on_bad_sample must be one of {POLICIES}, got {on_bad_sample!r}")
    return on_bad_sample


class BadSampleLog:
    """An ordered set of ``(path, reason)`` problems with a readable :meth:`summary`.

    Picklable (plain lists), so it travels with a data set into worker processes; see the module
    docstring for how worker-side problems reach the main process.
    """

    def __init__(self, entries: Iterable[tuple[str, str]] = ()):
        self._entries: list[tuple[str, str]] = []
        self._seen: set[tuple[str, str]] = set()
        self.extend(entries)

    def add(self, path: str, reason: str, warn: bool = True) -> bool:
        """Record one problem; returns False when it was already recorded."""
        key = (str(path), str(reason))
        if key in self._seen:
            return False
        self._seen.add(key)
        self._entries.append(key)
        if warn:
            LOGGER.warning("bad sample %s: %s", key[0], key[1])
        return True

    def extend(self, entries: Iterable[tuple[str, str]], warn: bool = False) -> None:
        for path, reason in entries:
            self.add(path, reason, warn=warn)

    def record_batch(self, batch: dict) -> int:
        """Add ``batch["bad_samples"]`` (from :func:`detection_collate`); returns how many were new."""
        before = len(self)
        self.extend(batch.get("bad_samples", ()) if isinstance(batch, dict) else ())
        return len(self) - before

    def merge(self, other: BadSampleLog) -> None:
        self.extend(other.entries)

    @property
    def entries(self) -> list[tuple[str, str]]:
        return list(self._entries)

    @property
    def paths(self) -> list[str]:
        """The distinct file names with a problem, in the order they were first seen."""
        return list(dict.fromkeys(p for p, _ in self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __iter__(self):
        return iter(self.entries)

    def summary(self) -> str:
        """One line per problem, grouped by file: ``"<path>: <reason>"``."""
        if not self._entries:
            return "no bad samples"
        by_path: dict[str, list[str]] = {}
        for path, reason in self._entries:
            by_path.setdefault(path, []).append(reason)
        lines = [f"{len(self._entries)} problem(s) in {len(by_path)} file(s):"]
        for path, reasons in by_path.items():
            lines.extend(f"  {path}: {reason}" for reason in reasons)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"BadSampleLog({len(self)} problem(s))"


class AnnotationReporter:
    """Applies the policy to problems found while reading annotations at construction.

    ``report(path, reason)`` raises :class:`BadSampleError` under ``"error"``; under ``"skip"`` it
    records the problem in ``log`` (with a warning) and the caller drops the box or file.
    """

    def __init__(self, on_bad_sample: str, log: BadSampleLog):
        self.policy = check_policy(on_bad_sample)
        self.log = log

    def report(self, path: str, reason: str) -> None:
        if self.policy == "error":
            raise BadSampleError(path, reason)
        self.log.add(path, reason)


def load_with_policy(
    load: Callable[[int], Any],
    index: int,
    length: int,
    on_bad_sample: str,
    log: BadSampleLog,
    known_bad: set[int] | None = None,
    max_tries: int = 100,
) -> tuple[Any, int, list[tuple[str, str]]]:
    """Call ``load(index)``; under ``"skip"`` fall back to the next indices on :class:`BadSampleError`.

    Returns ``(sample, used_index, problems)`` where ``problems`` lists the ``(path, reason)`` met on
    the way. ``known_bad`` (a per-process set) lets later epochs skip known bad indices without
    decoding them again. Raises :class:`BadSampleError` under ``"error"`` and ``RuntimeError`` when
    ``max_tries`` consecutive samples are bad.
    """
    if length <= 0:
        raise IndexError("the data set is empty")
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for a data set of {length} samples")
    index %= length
    problems: list[tuple[str, str]] = []
    tries = min(length, max_tries)
    for k in range(tries):
        j = (index + k) % length
        if known_bad is not None and j in known_bad and on_bad_sample == "skip":
            continue
        try:
            return load(j), j, problems
        except BadSampleError as err:
            if on_bad_sample == "error":
                raise
            problems.append((err.path, err.reason))
            log.add(err.path, err.reason)
            if known_bad is not None:
                known_bad.add(j)
    raise RuntimeError(
        f"no valid sample among {tries} consecutive indices starting at {index}; bad samples so far:\n{log.summary()}"
    )


def attach_problems(sample: Any, problems: Sequence[tuple[str, str]]) -> Any:
    """Put ``problems`` into ``target["bad_samples"]`` when ``sample`` is ``(image, target_dict)``."""
    if isinstance(sample, (tuple, list)) and len(sample) == 2 and isinstance(sample[1], dict):
        target = dict(sample[1])
        target["bad_samples"] = list(target.get("bad_samples", [])) + list(problems)
        return sample[0], target
    return sample


class SkipBadSamples:
    """Wrap any map-style data set whose ``__getitem__`` raises :class:`BadSampleError` on bad input.

    ``"skip"`` replaces a bad item with the next valid one and attaches the problems to the item's
    target (see the module docstring); ``"error"`` lets the error through. The ssdkit data sets
    already do this themselves; use the wrapper for your own data sets.
    """

    def __init__(self, dataset, on_bad_sample: str = "skip", log: BadSampleLog | None = None):
        self.dataset = dataset
        self.on_bad_sample = check_policy(on_bad_sample)
        self.bad_sample_log = log if log is not None else BadSampleLog()
        self._known_bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):  # classes, num_classes, coco ... of the wrapped data set
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        sample, _, problems = load_with_policy(
            self.dataset.__getitem__, index, len(self.dataset), self.on_bad_sample, self.bad_sample_log, self._known_bad
        )
        return attach_problems(sample, problems) if self.on_bad_sample == "skip" else sample


_MOVED = {"read_image": "image_io", "make_target": "sample", "NamedClasses": "mixins", "PolicyLoading": "mixins"}


def __getattr__(name: str) -> Any:
    """Names that moved to modules of their own stay importable from here."""
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
