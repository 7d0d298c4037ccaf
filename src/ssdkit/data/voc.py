"""Pascal VOC data sets: the VOCdevkit layout and a VOC-format folder with your own classes.

Shape legend: G ground-truth boxes of one image.

Box convention (as GluonCV): the XML holds 1-based inclusive pixel indices; all four are reduced
by 1, so a box is ``(x1, y1, x2, y2)`` with 0-based first and last covered pixel and network width
``x2 - x1`` (the VOC metric adds the +1 back). Difficult objects are kept, as a column.

All annotations are parsed at construction (GluonCV preloads labels too), so bad annotations are
reported up front; see :mod:`ssdkit.data.errors` for the ``on_bad_sample`` policy. Per box:

* NaN/inf or missing coordinates, a missing class name, or an unknown class -> box dropped, reported
  (GluonCV skips unknown names silently and crashes on missing fields); where the class list was chosen (a
  subset of VOC's 20, or ``VOCFolder``'s ``classes``), the objects of other classes are left out as GluonCV
  does and counted in ``other_classes`` / ``classes_note`` instead, so a subset is not a flood of reports;
* ``x2 <= x1`` or ``y2 <= y1`` (degenerate) or entirely outside the image -> dropped, reported;
* partly outside ``[0, W] x [0, H]`` -> clipped to it, reported (GluonCV drops such boxes with a
  warning instead; clipping keeps the object). These are GluonCV's bounds (it accepts ``x2 <= W``),
  so a clipped ``x2`` may be ``W``, one past the last 0-based pixel ``W - 1``, as an unclipped one may;
* an annotation without a usable ``<size>`` cannot be checked against the image at construction:
  its boxes are clipped to the decoded image when loaded.

Per file: an XML that is missing or does not parse, or an image that is missing, is reported and
the file dropped. An image that does not decode, or whose size disagrees with ``<size>``, is found
when loaded and replaced by the next valid sample (``"skip"``), left out (``"drop"``, for
evaluation) or raised (``"error"``).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections import Counter
from typing import Any, Callable, Iterable, Sequence

import torch

from ..constants import VOC_CLASSES
from .errors import AnnotationReporter, BadSampleError, BadSampleLog, check_policy
from .image_io import read_image
from .mixins import PolicyLoading
from .sample import make_target
from .voc_xml import VOCAnnotation, load_tree, object_names, parse_voc_xml

__all__ = ["VOC_CLASSES", "VOCAnnotation", "parse_voc_xml", "VOCDetection", "VOCFolder", "holdout_split"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".bmp", ".webp")


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Iterable):
        raise ValueError(f"classes must be a sequence of names, got {classes!r}")
    classes = tuple(str(c).strip() for c in classes)
    if not classes:
        raise ValueError("classes is empty")
    if any(not c for c in classes):
        raise ValueError(f"classes contains an empty name: {classes!r}")
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise ValueError(f"classes contains duplicates: {dupes}")
    return classes


class _VOCBase(PolicyLoading, torch.utils.data.Dataset):
    """Shared loading for VOC-format data; subclasses build ``items`` = [(image_id, xml, image)]."""

    def __init__(
        self,
        items: list[tuple[str, str, str]],
        classes: Sequence[str],
        transform: Callable | None,
        keep_difficult: bool,
        on_bad_sample: str,
        lowercase: bool,
        trees: dict | None = None,
        resolve_image: Callable | None = None,
        classes_chosen: bool = False,
    ):
        self.on_bad_sample = check_policy(on_bad_sample)
        self.bad_sample_log = BadSampleLog()
        self.transform = transform
        self.keep_difficult = keep_difficult
        self._classes = _check_classes(classes)
        if lowercase and any(c != c.lower() for c in self._classes):
            raise ValueError(f"VOC class names are matched in lower case; got {self._classes}")
        self._known_bad: set[int] = set()
        reporter = AnnotationReporter(self.on_bad_sample, self.bad_sample_log)
        class_to_id = {c: i for i, c in enumerate(self._classes)}
        trees = trees or {}
        self._items: list[tuple[str, str]] = []  # (image_id, image_path)
        self._annotations: list[VOCAnnotation] = []
        # a class list chosen on purpose leaves the other classes' objects out (as GluonCV does), counted, not
        # reported object by object
        other_classes: Counter[str] | None = Counter() if classes_chosen else None
        for image_id, xml_path, image_path in items:
            try:
                ann, problems = parse_voc_xml(
                    xml_path, class_to_id, keep_difficult, lowercase, trees.get(xml_path), other_classes
                )
            except BadSampleError as err:
                reporter.report(err.path, err.reason)
                continue
            for problem in problems:
                reporter.report(xml_path, problem)
            if resolve_image is not None:
                image_path = resolve_image(image_path, ann)
            if not os.path.isfile(image_path):
                reporter.report(image_path, f"image file not found (annotation {xml_path})")
                continue
            self._items.append((image_id, image_path))
            self._annotations.append(ann)

        self.other_classes: dict[str, int] = dict(sorted((other_classes or {}).items()))

    # --- public attributes ---------------------------------------------------------------------
    @property
    def classes_note(self) -> str | None:
        """One line on the objects of classes outside a chosen class list that were left out, or None."""
        if not self.other_classes:
            return None
        counts = ", ".join(f"{name} {n}" for name, n in self.other_classes.items())
        total = sum(self.other_classes.values())
        objects = "object" if total == 1 else "objects"
        return f"{total} {objects} of classes outside the {self.num_classes} chosen left out: {counts}"

    @property
    def image_ids(self) -> list[str]:
        return [image_id for image_id, _ in self._items]

    @property
    def image_paths(self) -> list[str]:
        return [path for _, path in self._items]

    def annotation(self, index: int) -> VOCAnnotation:
        """The preloaded annotation of item ``index`` (0-based boxes, labels, difficult)."""
        return self._annotations[index]

    def __len__(self) -> int:
        return len(self._items)

    # --- loading -------------------------------------------------------------------------------
    def load_raw(self, index: int) -> tuple[Any, dict]:
        """``(image, target)`` of item ``index`` before the transform; raises BadSampleError."""
        image_id, path = self._items[index]
        ann = self._annotations[index]
        image = read_image(path)
        h, w = image.shape[-2:]
        boxes = ann.boxes_xyxy
        if ann.width is not None and (ann.width, ann.height) != (w, h):
            raise BadSampleError(path, f"image is {w}x{h} pixels but its annotation says {ann.width}x{ann.height}")
        labels, difficult = ann.labels, ann.difficult
        if ann.width is None and len(boxes):
            boxes = boxes.copy()
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, labels, difficult = boxes[keep], labels[keep], difficult[keep]
        target = make_target(boxes, labels, difficult, h, w, image_id=image_id, path=path, orig_size=(int(h), int(w)))
        return image, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} images, {self.num_classes} classes, "
            f"{len(self.bad_sample_log)} bad-sample report(s))"
        )


def _normalize_voc_splits(splits) -> list[tuple[str, str]]:
    """Accept ``"2007_trainval"``, ``(2007, "trainval")`` or a sequence of either."""

    def is_pair(s):
        return (
            isinstance(s, (tuple, list))
            and len(s) == 2
            and isinstance(s[1], str)
            and "_" not in s[1]
            and (isinstance(s[0], int) or (isinstance(s[0], str) and "_" not in s[0] and not s[0].endswith(".txt")))
        )

    if isinstance(splits, str) or is_pair(splits):
        splits = [splits]
    out = []
    for s in splits:
        if isinstance(s, str):
            if "_" not in s:
                raise ValueError(f"VOC split {s!r} must look like '2007_trainval' or (2007, 'trainval')")
            year, name = s.split("_", 1)
        elif is_pair(s):
            year, name = s
        else:
            raise ValueError(f"VOC split {s!r} must look like '2007_trainval' or (2007, 'trainval')")
        year = str(year)
        out.append(("VOC" + year if year.isdigit() else year, name))
    if not out:
        raise ValueError("splits is empty")
    return out


def _read_split_file(path: str) -> list[str]:
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


class VOCDetection(_VOCBase):
    """Pascal VOC detection data set in the VOCdevkit layout (GluonCV's ``VOCDetection``).

    ``root/VOC2007/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<split>.txt}``.
    ``splits``: ``(("2007", "trainval"), ("2012", "trainval"))`` (default), strings such as
    ``"2007_test"``, or folder names (``("VOC2007", "test")``). Items are ``(image, target)`` in
    the common format of :mod:`ssdkit.data`; ``target["image_id"]`` is ``"VOC2007/000005"``.
    Names in the XML are matched after ``strip().lower()``.
    """

    def __init__(
        self,
        root: str,
        splits=(("2007", "trainval"), ("2012", "trainval")),
        transform: Callable | None = None,
        classes: Sequence[str] = VOC_CLASSES,
        keep_difficult: bool = True,
        on_bad_sample: str = "skip",
    ):
        self.root = os.path.expanduser(str(root))
        self.splits = _normalize_voc_splits(splits)
        items = []
        for folder, name in self.splits:
            base = os.path.join(self.root, folder)
            split_file = os.path.join(base, "ImageSets", "Main", name + ".txt")
            if not os.path.isfile(split_file):
                raise FileNotFoundError(f"VOC split file not found: {split_file}")
            for stem in _read_split_file(split_file):
                items.append(
                    (
                        f"{folder}/{stem}",
                        os.path.join(base, "Annotations", stem + ".xml"),
                        os.path.join(base, "JPEGImages", stem + ".jpg"),
                    )
                )
        chosen = tuple(classes) != VOC_CLASSES
        super().__init__(
            items, classes, transform, keep_difficult, on_bad_sample, lowercase=True, classes_chosen=chosen
        )


HOLDOUT_NAMES = ("val", "valid", "validation", "test")
HOLDOUT_PERCENT = 10


def holdout_split(image_ids: Sequence[str], percent: int = HOLDOUT_PERCENT) -> set[str]:
    """The ids held out for validation: those whose SHA-1 falls in the first ``percent`` % of its range, so an
    image stays on its side whatever else is in the folder. A folder of 2+ images where none falls there holds
    out the one of smallest hash."""

    def bucket(image_id: str) -> int:
        return int.from_bytes(hashlib.sha1(image_id.encode("utf-8")).digest()[:8], "big")

    cut = percent * 2**64 // 100
    held = {i for i in image_ids if bucket(i) < cut}
    if not held and len(image_ids) > 1:
        held = {min(image_ids, key=bucket)}
    return held


class VOCFolder(_VOCBase):
    """A VOC-format folder with your own classes (GluonCV's ``CustomVOCDetection``).

    ``root/Annotations/*.xml``, ``root/JPEGImages/``, optional ``root/ImageSets/Main/<split>.txt``.
    ``split=None`` uses every XML in ``Annotations``. Without an ``ImageSets/Main`` folder a named split is cut
    from the XMLs by :func:`holdout_split`: ``val`` / ``valid`` / ``validation`` / ``test`` is a deterministic
    ~10 % of the image ids, any other name (``train``) the rest; ``holdout`` then says so (else it is None).
    ``classes=None`` collects the names from all XMLs in ``Annotations`` (so every split agrees),
    sorted. Names are matched after ``strip()`` (case kept). The image is ``JPEGImages/<id>.jpg``,
    else the XML's ``<filename>``, else ``<id>`` with another common image extension.
    """

    def __init__(
        self,
        root: str,
        classes: Sequence[str] | None = None,
        split: str | None = None,
        transform: Callable | None = None,
        keep_difficult: bool = True,
        on_bad_sample: str = "skip",
    ):
        self.root = os.path.expanduser(str(root))
        ann_dir = os.path.join(self.root, "Annotations")
        img_dir = os.path.join(self.root, "JPEGImages")
        if not os.path.isdir(ann_dir):
            raise FileNotFoundError(f"VOC folder has no Annotations directory: {ann_dir}")
        sets_dir = os.path.join(self.root, "ImageSets", "Main")
        self.split = split
        self.holdout: str | None = None
        if split is not None and os.path.isdir(sets_dir):
            split_file = os.path.join(sets_dir, split + ".txt")
            if not os.path.isfile(split_file):
                available = sorted(f[:-4] for f in os.listdir(sets_dir) if f.endswith(".txt"))
                raise FileNotFoundError(f"split file not found: {split_file} (available: {available})")
            stems = _read_split_file(split_file)
        else:
            stems = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ann_dir, "*.xml")))
            if split is not None:
                held = holdout_split(stems)
                is_val = split in HOLDOUT_NAMES
                self.holdout = (
                    f"{self.root} has no ImageSets/Main: split {split!r} is "
                    f"{'the' if is_val else 'all but the'} {len(held)} of {len(stems)} images held out "
                    f"for validation by a hash of the image id (about {HOLDOUT_PERCENT} %)"
                )
                stems = [s for s in stems if (s in held) == is_val]
        items = [(stem, os.path.join(ann_dir, stem + ".xml"), os.path.join(img_dir, stem + ".jpg")) for stem in stems]
        trees: dict[str, Any] = {}
        chosen = classes is not None
        if classes is None:
            classes = self._collect_classes(ann_dir, trees)
            if not classes:
                raise ValueError(f"no object names found in the XML files of {ann_dir}")

        def resolve_image(image_path: str, ann: VOCAnnotation) -> str:
            if os.path.isfile(image_path):
                return image_path
            stem = os.path.splitext(os.path.basename(image_path))[0]
            candidates = [os.path.join(img_dir, ann.filename)] if ann.filename else []
            candidates += [os.path.join(img_dir, stem + ext) for ext in IMAGE_EXTENSIONS]
            return next((c for c in candidates if os.path.isfile(c)), image_path)

        super().__init__(
            items,
            classes,
            transform,
            keep_difficult,
            on_bad_sample,
            lowercase=False,
            trees=trees,
            resolve_image=resolve_image,
            classes_chosen=chosen,
        )

    @staticmethod
    def _collect_classes(ann_dir: str, trees: dict) -> tuple[str, ...]:
        names: set[str] = set()
        for path in sorted(glob.glob(os.path.join(ann_dir, "*.xml"))):
            try:
                trees[path] = load_tree(path)
            except BadSampleError:
                continue  # reported when the file is read as an item
            names.update(object_names(trees[path], lowercase=False))
        return tuple(sorted(names))
