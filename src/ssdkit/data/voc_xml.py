"""One VOC annotation file: parsed, checked and reported (see :mod:`ssdkit.data.voc` for the rules per box).

Box convention (as GluonCV): the XML holds 1-based inclusive pixel indices; all four are reduced by 1.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
from defusedxml import ElementTree

from .errors import BadSampleError

__all__ = ["VOCAnnotation", "parse_voc_xml", "load_tree", "object_names"]


@dataclass
class VOCAnnotation:
    """One parsed XML. ``width``/``height`` are None when ``<size>`` is missing or zero."""

    width: int | None
    height: int | None
    boxes_xyxy: np.ndarray  # float32 [G, 4], 0-based
    labels: np.ndarray  # int64 [G]
    difficult: np.ndarray  # uint8 [G]
    filename: str | None = None


def _text(elem, tag: str) -> str | None:
    child = elem.find(tag) if elem is not None else None
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _parse_size(root) -> tuple[int | None, int | None]:
    size = root.find("size")
    try:
        width = int(float(_text(size, "width")))
        height = int(float(_text(size, "height")))
    except (TypeError, ValueError):
        return None, None
    if width <= 0 or height <= 0:
        return None, None
    return width, height


def load_tree(path: str):
    if not os.path.isfile(path):
        raise BadSampleError(path, "annotation file not found")
    try:
        return ElementTree.parse(path).getroot()
    except Exception as err:  # ParseError and defusedxml's forbidden-construct errors
        raise BadSampleError(path, f"cannot parse XML ({type(err).__name__}: {err})") from None


def object_names(root, lowercase: bool) -> list[str]:
    names = []
    for obj in root.iter("object"):
        name = _text(obj, "name")
        if name:
            names.append(name.lower() if lowercase else name)
    return names


def _bounds(width: int, height: int) -> str:
    """The clip bounds as a clipped box's report states them: x2 = W is one past the last 0-based pixel, W - 1, but
    inside the bounds GluonCV's VOC reader accepts (``xmin < xmax <= width``), so ssdkit clips to them too."""
    return f"(GluonCV's bounds 0 <= x <= {width}, 0 <= y <= {height})"


def parse_voc_xml(
    path: str,
    class_to_id: dict[str, int],
    keep_difficult: bool = True,
    lowercase: bool = True,
    root=None,
    other_classes: Counter[str] | None = None,
) -> tuple[VOCAnnotation, list[str]]:
    """Parse one VOC XML file into 0-based boxes.

    Returns ``(annotation, problems)``: ``problems`` describes each box that was dropped or clipped
    (see the module docstring). Raises :class:`BadSampleError` when the file is missing or does not
    parse. ``class_to_id`` maps names (after ``strip()``, and ``lower()`` when ``lowercase``) to ids.
    With ``other_classes`` (classes chosen on purpose), an object of a name outside ``class_to_id`` is left out
    and counted there by name instead of being a problem.
    """
    if root is None:
        root = load_tree(path)
    width, height = _parse_size(root)
    boxes, labels, difficult, problems = [], [], [], []
    for k, obj in enumerate(root.iter("object")):
        name = _text(obj, "name")
        if not name:
            problems.append(f"object {k}: missing <name>")
            continue
        if lowercase:
            name = name.lower()
        if name not in class_to_id and other_classes is not None:
            other_classes[name] += 1
            continue
        if name not in class_to_id:
            known = ", ".join(class_to_id)
            problems.append(f"object {k}: unknown class {name!r} (known classes: {known})")
            continue
        try:
            is_difficult = int(float(_text(obj, "difficult") or 0))
        except ValueError:
            is_difficult = 0
        if is_difficult and not keep_difficult:
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            problems.append(f"object {k} ({name}): missing <bndbox>")
            continue
        coords = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            raw = _text(bndbox, tag)
            try:
                coords.append(float(raw) - 1.0)
            except (TypeError, ValueError):
                coords.append(None)
                problems.append(f"object {k} ({name}): missing or unreadable <{tag}> ({raw!r})")
                break
        if None in coords:
            continue
        x1, y1, x2, y2 = coords
        desc = f"object {k} ({name}) box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] (0-based)"
        if not all(math.isfinite(c) for c in coords):
            problems.append(f"{desc}: NaN or infinite coordinate")
            continue
        if x2 <= x1 or y2 <= y1:
            problems.append(f"{desc}: degenerate (xmax <= xmin or ymax <= ymin)")
            continue
        if width is not None:
            if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
                problems.append(f"{desc}: entirely outside the {width}x{height} image")
                continue
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                cx1, cy1 = max(x1, 0.0), max(y1, 0.0)
                cx2, cy2 = min(x2, float(width)), min(y2, float(height))
                problems.append(
                    f"{desc}: partly outside the {width}x{height} image, clipped to "
                    f"[{cx1:g}, {cy1:g}, {cx2:g}, {cy2:g}] {_bounds(width, height)}"
                )
                x1, y1, x2, y2 = cx1, cy1, cx2, cy2
        boxes.append((x1, y1, x2, y2))
        labels.append(class_to_id[name])
        difficult.append(1 if is_difficult else 0)
    ann = VOCAnnotation(
        width=width,
        height=height,
        boxes_xyxy=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=np.uint8),
        filename=_text(root, "filename"),
    )
    return ann, problems
