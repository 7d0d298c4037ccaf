"""Mixins of the ssdkit data sets: class names, and loading under the bad-sample policy."""

from __future__ import annotations

from .errors import DroppedSample, finish_sample, load_with_policy

__all__ = ["NamedClasses", "PolicyLoading"]


class NamedClasses:
    """Mixin: ``classes`` (names, in label order) and ``num_classes`` (background excluded) from ``self._classes``."""

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self._classes)


class PolicyLoading(NamedClasses):
    """Mixin for file-backed data sets: ``__getitem__`` loads ``self.load_raw(i)`` under the bad-sample policy,
    then applies ``self.transform`` (not to the :class:`DroppedSample` of ``"drop"``). Needs ``load_raw``,
    ``transform``, ``on_bad_sample``, ``bad_sample_log`` and ``_known_bad``."""

    def __getitem__(self, index: int):
        sample, _, problems = load_with_policy(
            self.load_raw, index, len(self), self.on_bad_sample, self.bad_sample_log, self._known_bad
        )
        if self.transform is not None and not isinstance(sample, DroppedSample):
            sample = self.transform(*sample)
        return finish_sample(sample, problems, self.on_bad_sample)
