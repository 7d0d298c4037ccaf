"""GluonCV's transform presets under GluonCV's names (``gluoncv.data.transforms.presets``)."""

from . import ssd

__all__ = ["ssd"]
