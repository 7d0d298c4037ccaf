"""Bad-sample handling shared by every ssdkit data set.

A *bad sample* is a file the pipeline cannot use as is: a missing or undecodable image, an
annotation file that does not parse, or a box that is NaN, degenerate, outside the image or has an
unknown class. Problems are always reported with the file name.

Three policies, chosen with ``on_bad_sample``:

``"error"``
    raise :class:`BadSampleError` naming the file and the problem.
``"skip"``
    annotation problems found at construction drop the offending box (or file) and are recorded
    in the data set's :class:`BadSampleLog` (and logged as a warning); an image that fails while
    loading in ``__getitem__`` is replaced by the next valid index and recorded. When no index can
    be loaded (the whole set, or ``max_tries`` in a row) :class:`NoValidSampleError` is raised.
``"drop"``
    for evaluation, where a replacement would score another image twice: as ``"skip"``, but an image
    that fails while loading gives a :class:`DroppedSample` (its problems, no image) that
    :func:`ssdkit.data.collate.detection_collate` leaves out of the batch, so every image is scored
    once or not at all. :func:`ssdkit.data.collate.nonempty_batches` passes over batches left empty.

Across DataLoader worker processes each worker holds its own copy of the data set, so its log is
lost. To keep the report, every item produced under ``"skip"`` or ``"drop"`` carries the problems met
while producing it in ``target["bad_samples"]`` (a list of ``(path, reason)``);
:func:`ssdkit.data.collate.detection_collate` gathers them into ``batch["bad_samples"]`` and the
main process adds them to its log with :meth:`BadSampleLog.record_batch`. The log keeps each
``(path, reason)`` once, so the same problem seen in several places is not counted twice.

An error raised in a DataLoader worker reaches the main process as ``type(err)(message)``, with the worker's
whole traceback as the one argument; :class:`BadSampleError` and :class:`NoValidSampleError` take that argument
and recover their own message from its last line (:func:`worker_message`), so the command line can print them
as one line.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BadSampleError",
    "BadSampleLog",
    "DroppedSample",
    "NoValidSampleError",
    "SkipBadSamples",
    "check_policy",
    "load_with_policy",
    "attach_problems",
    "worker_message",
]

LOGGER = logging.getLogger("ssdkit.data")
POLICIES = ("skip", "error", "drop")
BRIEF_PROBLEMS = 3  # problems quoted in a one-line error message


def worker_message(exc_type: type, text: str) -> str:
    """The message of an ``exc_type`` error raised in a DataLoader worker, from ``text``: the argument PyTorch
    re-raises it with in the main process (``"Caught <name> in DataLoader worker process 0.\\nOriginal
    Traceback ..."``, whose last line is ``"<module>.<qualname>: <message>"``). Any other ``text`` is returned as
    it is."""
    qualified = exc_type.__qualname__
    if exc_type.__module__ not in ("builtins", "__main__"):  # as the traceback module names the type
        qualified = f"{exc_type.__module__}.{qualified}"
    head = f"\n{qualified}: "
    at = text.rfind(head)
    if not text.startswith(f"Caught {exc_type.__name__} ") or at < 0:
        return text
    return text[at + len(head) :].strip()


def _split_path(message: str) -> tuple[str, str]:
    """``(path, reason)`` of a ``"<path>: <reason>"`` message; a path that itself holds ``": "`` is found when the
    file exists."""
    cuts = [m.start() for m in re.finditer(": ", message)]
    if not cuts:
        return "", message
    cut = next((i for i in cuts if os.path.exists(message[:i])), cuts[0])
    return message[:cut], message[cut + 2 :]


class BadSampleError(ValueError):
    """A sample (image or annotation file) that cannot be used. ``str(err)`` is ``"<path>: <reason>"``.

    ``BadSampleError(message)`` with one argument (how PyTorch re-raises a worker's error, see the module
    docstring) recovers ``path`` and ``reason`` from the message."""

    def __init__(self, path: str, reason: str | None = None):
        if reason is None:
            path, reason = _split_path(worker_message(type(self), str(path)))
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)

    def __reduce__(self):  # keep (path, reason) when the error crosses a worker process boundary
        return type(self), (self.path, self.reason)


class NoValidSampleError(RuntimeError):
    """Under ``"skip"`` no sample could be loaded: every one of the data set, or ``max_tries`` in a row. Also
    raised by :func:`ssdkit.data.collate.nonempty_batches` when every image was dropped. One line; built from
    the message alone, so it crosses a DataLoader worker boundary intact (see the module docstring)."""

    def __init__(self, message: str):
        super().__init__(worker_message(type(self), str(message)))


@dataclass
class DroppedSample:
    """The item ``"drop"`` gives for a sample that cannot be loaded: the ``(path, reason)`` problems met, no image.
    :func:`ssdkit.data.collate.detection_collate` leaves it out of the batch and keeps its problems."""

    problems: list[tuple[str, str]] = field(default_factory=list)


def brief_problems(problems: Sequence[tuple[str, str]]) -> str:
    """The first few ``(path, reason)`` problems on one line: ``"a.jpg: empty; b.jpg: corrupt and 3 more"``."""
    text = "; ".join(f"{path}: {reason}" for path, reason in problems[:BRIEF_PROBLEMS])
    more = len(problems) - BRIEF_PROBLEMS
    return f"{text} and {more} more" if more > 0 else text


def none_readable(dropped: int, problems: Sequence[tuple[str, str]]) -> NoValidSampleError:
    """The error of a split (or a batch stream) of which all ``dropped`` images were left out as unreadable."""
    return NoValidSampleError(f"none of its {dropped} images can be read ({brief_problems(problems)})")


def check_policy(on_bad_sample: str) -> str:
    """Validate an ``on_bad_sample`` argument (``"skip"``, ``"error"`` or ``"drop"``) and return it."""
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
        self.dropped = 0  # items left out of the batches given to record_batch (policy "drop")
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
        """Add ``batch["bad_samples"]`` (from :func:`detection_collate`) and count ``batch["dropped"]`` in
        :attr:`dropped`; returns how many problems were new."""
        if not isinstance(batch, dict):
            return 0
        before = len(self)
        self.extend(batch.get("bad_samples", ()))
        self.dropped += int(batch.get("dropped", 0))
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
    decoding them again. Raises :class:`BadSampleError` under ``"error"`` and :class:`NoValidSampleError`
    when ``max_tries`` consecutive samples are bad. Under ``"drop"`` a bad sample gives
    ``(DroppedSample(problems), index, problems)``: no other sample stands in for it.
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
            if on_bad_sample == "drop":  # evaluation: an image in its place would be scored twice
                return DroppedSample(problems), j, problems
            if known_bad is not None:
                known_bad.add(j)
    raise NoValidSampleError(_no_valid_message(index, tries, length, problems or log.entries))


def _no_valid_message(index: int, tries: int, length: int, problems: Sequence[tuple[str, str]]) -> str:
    if tries == length:
        where = f"none of its {length} images can be read"
    else:
        where = f"the {tries} images from index {index} on cannot be read"
    return f"{where} ({brief_problems(problems)})"


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
    target (see the module docstring); ``"drop"`` gives a :class:`DroppedSample` instead (evaluation);
    ``"error"`` lets the error through. The ssdkit data sets already do this themselves; use the wrapper
    for your own data sets.
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
        return finish_sample(sample, problems, self.on_bad_sample)


def finish_sample(sample: Any, problems: Sequence[tuple[str, str]], on_bad_sample: str) -> Any:
    """What ``__getitem__`` returns for ``load_with_policy``'s ``sample``: problems attached unless the policy
    is ``"error"``; a :class:`DroppedSample` as it is."""
    if isinstance(sample, DroppedSample) or on_bad_sample == "error":
        return sample
    return attach_problems(sample, problems)


_MOVED = {"read_image": "image_io", "make_target": "sample", "NamedClasses": "mixins", "PolicyLoading": "mixins"}


def __getattr__(name: str) -> Any:
    """Names that moved to modules of their own stay importable from here."""
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
