"""SyntheticShapes: the built-in detection data set (the default of ``ssdkit train``).

Shape legend: H x W image, G objects of one image.

Each image is generated on the fly from ``(seed, index)`` (numpy ``default_rng([seed, index])``):
nothing touches the disk, and the same pair always gives the same tensors. With
``fresh_per_epoch=True`` the set is an endless stream cut into epochs of ``num_images``: after
``set_epoch(e)``, item ``index`` comes from ``(seed, index, e)`` for ``e >= 1`` (epoch 0 is the
fixed set), so a training run sees new images every epoch and a resumed run the same ones again.

An image holds 1 to 10 filled shapes (``min_objects``/``max_objects``; ``set_object_range`` changes them
between epochs, e.g. for denser training images); the *shape* defines the class (circle, square, triangle, star,
cross, ring), never the colour. Sizes are log-uniform between ``min_size`` and ``max_size`` pixels
(about 8 to 100 at 128 x 128), each shape is mildly stretched (aspect 0.78-1.28) and, except circles
and rings, rotated. Colours are random but kept apart from the local background. Backgrounds are
textured: flat, linear or radial gradients, or soft stripes, plus random thin clutter lines, plus
uniform pixel noise of standard deviation ``noise_std``.

Occlusion: shapes are drawn largest first, later ones on top. A new shape is placed only where it
hides at most ``max_occlusion`` (60 %) of every earlier shape; after a few failed placements it is
left out, so every drawn shape is labelled and at least 40 % visible (an image keeps at least one
shape, so object counts stay within ``[1, max_objects]``). A shape must also have at
least half of its area inside the image.

Boxes are the **full extent** of each shape's pixels inside the image (occlusion by later shapes
ignored, truncation by the image border applied), in GluonCV's 0-based convention: ``x1``/``y1`` the
first and ``x2``/``y2`` the last covered pixel index (as VOC after its -1), so the box is tight and the
VOC metric's +1 recovers the pixel extent. ``difficult`` is all zero.

Rasterisation is vectorised numpy on a local window per shape, the shape's bounding box (masks from coordinate
grids: pixel centres tested against the unit shape), into an image held as one float plane per channel: one to two
milliseconds per image on one core, growing with the number of shapes.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torchvision import tv_tensors

from .mixins import NamedClasses
from .sample import make_target

__all__ = ["SyntheticShapes", "SHAPE_CLASSES", "VAL_SEED_OFFSET", "DEFAULT_OBJECT_RANGE", "check_shape_classes"]

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
VAL_SEED_OFFSET = 10**6
DEFAULT_OBJECT_RANGE = (1, 10)  # objects per image unless told otherwise

_STAR_OUTER, _STAR_INNER = 1.0, 0.45
_CROSS_HALF_WIDTH = 0.3
_RING_INNER = 0.6
_TRIANGLE_SCALE = 1.1
_MIN_PIXELS = 12  # shapes smaller than this (after rasterisation) are not drawn
_MIN_INSIDE = 0.5  # fraction of a shape's area that must lie inside the image
_MIN_CONTRAST = 110.0  # L1 distance between a shape's colour and its local background
_PLACEMENT_TRIES = 6
# area of each unit shape (in normalised coordinates), to measure how much of a shape is cut off
_UNIT_AREA = {
    "circle": math.pi,
    "ring": math.pi * (1 - _RING_INNER**2),
    "square": 4.0,
    "cross": 8 * _CROSS_HALF_WIDTH - 4 * _CROSS_HALF_WIDTH**2,
    "triangle": 3 * math.sqrt(3) / 4 * _TRIANGLE_SCALE**2,
    "star": 10 * 0.5 * _STAR_OUTER * _STAR_INNER * math.sin(math.pi / 5),
}


def _unit_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test for the unit shape in normalised local coordinates (``u`` right, ``v`` down)."""
    if kind == "circle":
        return u * u + v * v <= 1.0
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= _RING_INNER**2)
    if kind == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if kind == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= _CROSS_HALF_WIDTH) & (av <= 1.0)) | ((av <= _CROSS_HALF_WIDTH) & (au <= 1.0))
    if kind == "triangle":
        # equilateral, apex up, circumradius _TRIANGLE_SCALE: three half-planes at inradius r/2
        u, v = u / _TRIANGLE_SCALE, v / _TRIANGLE_SCALE
        c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
        return (v <= 0.5) & (c * u - s * v <= 0.5) & (-c * u - s * v <= 0.5)
    if kind == "star":
        # 5 points: the boundary in each pi/5 sector is the segment between an outer and an inner vertex
        sector = math.pi / 5
        phi = np.mod(np.arctan2(v, u) + math.pi / 2, 2 * math.pi)  # 0 at the top point
        r = np.hypot(u, v)
        k = np.floor(phi / sector)
        alpha = phi - k * sector
        even = (k.astype(np.int64) % 2) == 0
        ra = np.where(even, _STAR_OUTER, _STAR_INNER)
        rb = np.where(even, _STAR_INNER, _STAR_OUTER)
        px, py = r * np.cos(alpha), r * np.sin(alpha)
        bx, by = rb * math.cos(sector), rb * math.sin(sector)
        # inside iff P is on the origin's side of the line A(ra, 0) -> B(bx, by)
        cross_p = (bx - ra) * py - by * (px - ra)
        cross_o = (bx - ra) * 0.0 - by * (0.0 - ra)
        return cross_p * np.sign(cross_o) >= 0
    raise ValueError(f"unknown shape {kind!r}")


def _half_extent(kind: str, rx: float, ry: float, cos_t: float, sin_t: float) -> tuple[float, float]:
    """Half width and half height in pixels of the box around a unit shape scaled by ``(rx, ry)`` and rotated by
    the angle of ``(cos_t, sin_t)``: a square (a cross: two bars) is exact, the other shapes lie in the unit disk
    (triangles in the disk of radius ``_TRIANGLE_SCALE``)."""
    c, s = abs(cos_t), abs(sin_t)
    if kind == "square":
        return c * rx + s * ry, s * rx + c * ry
    if kind == "cross":
        w = _CROSS_HALF_WIDTH
        return max(c * rx + w * s * ry, w * c * rx + s * ry), max(s * rx + w * c * ry, w * s * rx + c * ry)
    radius = _TRIANGLE_SCALE if kind == "triangle" else 1.0
    return radius * math.hypot(cos_t * rx, sin_t * ry), radius * math.hypot(sin_t * rx, cos_t * ry)


def check_shape_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """``classes`` as a tuple; ValueError unless they are distinct names from :data:`SHAPE_CLASSES`."""
    classes = tuple(classes)
    unknown = [c for c in classes if c not in SHAPE_CLASSES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct names from {SHAPE_CLASSES}, got {classes}")
    return classes


def _size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (int(image_size), int(image_size)) if np.isscalar(image_size) else tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"image_size must be an int or (H, W) of at least 16 pixels, got {image_size}")
    return size  # type: ignore[return-value]


class SyntheticShapes(NamedClasses, torch.utils.data.Dataset):
    """Deterministic synthetic detection data: ``(image, target)`` in the common format of :mod:`ssdkit.data`.

    ``num_images`` items; item ``i`` depends only on ``(seed, i)`` and the constructor arguments.
    ``classes`` chooses (and orders) shapes from ``SHAPE_CLASSES``; labels index into it.
    ``image_size`` is an int (square) or ``(H, W)``. Use :meth:`splits` for a train/val pair.
    """

    CLASSES = SHAPE_CLASSES

    def __init__(
        self,
        num_images: int = 1000,
        seed: int = 0,
        image_size: int | Sequence[int] = 128,
        classes: Sequence[str] = SHAPE_CLASSES,
        min_objects: int = DEFAULT_OBJECT_RANGE[0],
        max_objects: int = DEFAULT_OBJECT_RANGE[1],
        min_size: float = 8.0,
        max_size: float = 100.0,
        max_occlusion: float = 0.6,
        noise_std: float = 6.0,
        clutter_lines: int = 5,
        transform: Callable | None = None,
        fresh_per_epoch: bool = False,
    ):
        if int(num_images) < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        size = _size_pair(image_size)
        classes = check_shape_classes(classes)
        if not 1 <= int(min_objects) <= int(max_objects):
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        if not 0 < float(min_size) <= float(max_size):
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
        if not 0.0 <= float(max_occlusion) < 1.0:
            raise ValueError(f"max_occlusion must be in [0, 1), got {max_occlusion}")
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.image_size = size
        self._classes = classes
        self.min_objects, self.max_objects = int(min_objects), int(max_objects)
        self.min_size, self.max_size = float(min_size), float(max_size)
        self.max_occlusion = float(max_occlusion)
        self.noise_std = float(noise_std)
        self.clutter_lines = int(clutter_lines)
        self.transform = transform
        self.fresh_per_epoch = bool(fresh_per_epoch)
        self.epoch = 0
        self._base = (size, self.min_size, self.max_size)
        self._set_grid(size)

    def _set_grid(self, size: tuple[int, int]) -> None:
        h, w = size
        self._yy, self._xx = np.meshgrid(
            np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5, indexing="ij"
        )
        # each pixel's index in the flattened image: a shape's pixels are gathered and written through 1-D indices
        # (one boolean gather per shape, then cheap 1-D takes, instead of 2-D fancy indexing at every use)
        self._flat = np.arange(h * w, dtype=np.intp).reshape(h, w)
        self._rows, self._cols = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)

    @classmethod
    def splits(
        cls, seed: int = 0, num_train: int = 2000, num_val: int = 500, **kwargs
    ) -> tuple[SyntheticShapes, SyntheticShapes]:
        """``(train, val)``: the same generator with seeds ``seed`` and ``seed + VAL_SEED_OFFSET``.

        ``kwargs`` (image size, classes, ...) go to both; pass ``transform`` separately via the
        attribute if train and val need different transforms.
        """
        return cls(num_train, seed, **kwargs), cls(num_val, seed + VAL_SEED_OFFSET, **kwargs)

    def __len__(self) -> int:
        return self.num_images

    def set_epoch(self, epoch: int) -> None:
        """Choose the images of training epoch ``epoch`` (without ``fresh_per_epoch`` the images stay the same).

        DataLoader workers copy the data set when they start, so call this before iterating the loader
        (with ``persistent_workers=True`` the workers would keep the epoch they started with).
        """
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def set_num_images(self, num_images: int) -> None:
        """Items from now on (e.g. a longer last epoch of a run whose time allows it): with ``fresh_per_epoch`` the
        first items of an epoch stay what they were, the rest are new. Like ``set_epoch``, call it before iterating
        the loader (and before a sampler reads the length)."""
        if int(num_images) < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        self.num_images = int(num_images)

    def set_object_range(self, min_objects: int, max_objects: int) -> None:
        """Objects per image from now on (e.g. denser training images early in a run); like ``set_epoch``, call it
        before iterating the loader."""
        if not 1 <= int(min_objects) <= int(max_objects):
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        self.min_objects, self.max_objects = int(min_objects), int(max_objects)

    def set_image_size(self, image_size: int | Sequence[int] | None) -> None:
        """Draw the next images at ``image_size`` (int or ``(H, W)``; None: the size given to the constructor), with
        the object sizes scaled alike (by the shorter side), so that a smaller image looks like a downscaled one:
        e.g. cheaper training images early in a run. Like ``set_epoch``, call it before iterating the loader."""
        base, min_size, max_size = self._base
        size = base if image_size is None else _size_pair(image_size)
        scale = min(size) / min(base)
        self.image_size = size
        self.min_size, self.max_size = min_size * scale, max_size * scale
        self._set_grid(size)

    def _in_fresh_epoch(self) -> bool:
        return self.fresh_per_epoch and self.epoch > 0

    def _key(self, index: int) -> list[int]:
        """The numpy seed sequence of item ``index`` in the current epoch."""
        return [self.seed, int(index), self.epoch] if self._in_fresh_epoch() else [self.seed, int(index)]

    def __getitem__(self, index: int):
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        index %= self.num_images
        image_hwc, boxes, labels = self.render(index)
        h, w = self.image_size
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image_hwc.transpose(2, 0, 1))))
        epoch = f", epoch={self.epoch}" if self._in_fresh_epoch() else ""
        epoch += f", size={h}x{w}" if (h, w) != self._base[0] else ""
        target = make_target(
            boxes,
            labels,
            np.zeros(len(labels), np.uint8),
            h,
            w,
            image_id=index,
            path=f"synthetic(seed={self.seed}{epoch})[{index}]",
            orig_size=(h, w),
        )
        if self.transform is not None:
            return self.transform(image, target)
        return image, target

    # --- generation ----------------------------------------------------------------------------
    def render(self, index: int, with_masks: bool = False):
        """``(image uint8 [H, W, 3], boxes_xyxy float32 [G, 4], labels int64 [G])`` for item ``index``.

        ``with_masks=True`` appends ``masks bool [G, H, W]``: each shape's full extent inside the
        image, in drawing order (later shapes on top), e.g. to check occlusion or for segmentation.
        """
        rng = np.random.default_rng(self._key(index))
        img = self._background(rng)  # float32 [3, H, W]: one plane per channel, so per-pixel work runs along rows
        h, w = self.image_size
        owner = np.full((h, w), -1, dtype=np.int16)
        full_area: list[int] = []
        visible: list[int] = []
        boxes: list[tuple[float, float, float, float]] = []
        labels: list[int] = []
        masks: list[np.ndarray] | None = [] if with_masks else None
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        sizes = np.sort(np.exp(rng.uniform(math.log(self.min_size), math.log(self.max_size), n)))[::-1]
        kinds = rng.integers(0, len(self._classes), n)
        for k, (size, label) in enumerate(zip(sizes, kinds)):
            # the last candidate of a still empty image gets many tries: every image has an object
            tries = _PLACEMENT_TRIES if boxes or k < n - 1 else 100
            placed = self._place(rng, img, owner, full_area, visible, float(size), self._classes[label], masks, tries)
            if placed is None:
                continue
            box, area = placed
            boxes.append(box)
            labels.append(int(label))
            full_area.append(area)
            visible.append(area)
        # uniform pixel noise with standard deviation noise_std (+0.5 so the cast rounds)
        half = self.noise_std * math.sqrt(3.0)
        noise = rng.random((h, w, 3), dtype=np.float32)  # drawn in H, W, C order
        noise *= 2 * half
        noise += 0.5 - half
        img += noise.transpose(2, 0, 1)
        image = np.clip(img, 0, 255, out=img).astype(np.uint8).transpose(1, 2, 0)
        out = (image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64))
        if masks is not None:
            out += (np.stack(masks) if masks else np.zeros((0, h, w), bool),)
        return out

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.image_size
        yy, xx = self._yy / h, self._xx / w
        c0 = rng.uniform(0, 255, 3).astype(np.float32)
        c1 = np.clip(c0 + rng.uniform(-90, 90, 3), 0, 255).astype(np.float32)
        kind = int(rng.integers(0, 4))
        theta = rng.uniform(0, 2 * math.pi)
        proj = math.cos(theta) * xx + math.sin(theta) * yy
        if kind == 0:
            t = np.zeros_like(xx)
        elif kind == 1:
            t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
        elif kind == 2:
            freq = rng.uniform(2, 10)
            t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * proj + rng.uniform(0, 2 * math.pi))
        else:
            cy, cx = rng.uniform(0, 1, 2)
            t = np.clip(np.hypot(yy - cy, xx - cx) / 1.2, 0, 1)
        img = c0[:, None, None] + (c1 - c0)[:, None, None] * t
        for _ in range(int(rng.integers(0, self.clutter_lines + 1))):
            py, px = rng.uniform(0, h), rng.uniform(0, w)
            ang = rng.uniform(0, math.pi)
            width = rng.uniform(0.6, 1.6)
            dist = np.abs(math.sin(ang) * (self._xx - px) - math.cos(ang) * (self._yy - py))
            img[:, dist <= width / 2] = rng.uniform(0, 255, 3)[:, None]
        return np.ascontiguousarray(img, dtype=np.float32)

    def _place(self, rng, img, owner, full_area, visible, size, kind, masks=None, tries=_PLACEMENT_TRIES):
        """Try to draw one shape; returns ``(box, area)`` or None when it cannot be placed."""
        h, w = self.image_size
        stretch = math.exp(rng.uniform(-0.25, 0.25))
        rx, ry = size / 2 * math.sqrt(stretch), size / 2 / math.sqrt(stretch)
        if kind in ("circle", "ring"):
            theta = 0.0
        elif kind in ("square", "cross"):
            theta = rng.uniform(-math.pi / 6, math.pi / 6)
        else:
            theta = rng.uniform(-math.pi, math.pi)
        reach = 1.45 * max(rx, ry) * (_TRIANGLE_SCALE if kind == "triangle" else 1.0)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        half_x, half_y = _half_extent(kind, rx, ry, cos_t, sin_t)
        expected_area = _UNIT_AREA[kind] * rx * ry  # pixels of the whole shape, in or out of the image
        for _ in range(tries):
            cx = rng.uniform(-0.2 * reach, w + 0.2 * reach)
            cy = rng.uniform(-0.2 * reach, h + 0.2 * reach)
            # the window is the shape's bounding box with a pixel to spare, within the square of side 2 * reach
            # that the placement is drawn for: every pixel the shape covers lies inside both, so the mask, its
            # pixels and their order are those of the square, for half (round shapes) to three quarters of its pixels
            cy0 = max(int(math.floor(cy - reach)), int(math.floor(cy - half_y)) - 1, 0)
            cy1 = min(int(math.ceil(cy + reach)) + 1, int(math.ceil(cy + half_y)) + 1, h)
            cx0 = max(int(math.floor(cx - reach)), int(math.floor(cx - half_x)) - 1, 0)
            cx1 = min(int(math.ceil(cx + reach)) + 1, int(math.ceil(cx + half_x)) + 1, w)
            if cy1 <= cy0 or cx1 <= cx0:
                continue
            ys = (self._rows[cy0:cy1] + (0.5 - cy))[:, None]
            xs = (self._cols[cx0:cx1] + (0.5 - cx))[None, :]
            u = (cos_t * xs + sin_t * ys) * (1.0 / rx)
            v = (cos_t * ys - sin_t * xs) * (1.0 / ry)
            mask = _unit_mask(kind, u, v)
            area = int(np.count_nonzero(mask))
            if area < _MIN_PIXELS or area < _MIN_INSIDE * expected_area:
                continue
            # the shape's pixels as flat image indices in row-major order, found once and reused below
            pixels = self._flat[cy0:cy1, cx0:cx1][mask]
            covered = owner.take(pixels)
            covered = covered[covered >= 0]
            # the earlier shapes this one would hide part of, and how many of their pixels; each must stay visible
            # for its share (the others keep theirs: an earlier placement checked them)
            hidden: list[tuple[int, int]] = []
            if covered.size:
                counts = np.bincount(covered)
                hidden = [(int(j), int(counts[j])) for j in np.flatnonzero(counts)]
                if any(visible[j] - n < (1.0 - self.max_occlusion) * full_area[j] for j, n in hidden):
                    continue
            planes = img.reshape(3, -1)  # a view: the image is contiguous
            # the mean colour under the shape: a running sum over the pixels in row-major order, then a division,
            # as np.mean of the pixels' rows adds them (a pairwise sum along the plane would round differently)
            under = np.cumsum(planes.take(pixels, axis=1), axis=1)[:, -1]
            colour = self._colour(rng, np.true_divide(under, np.intp(area), out=under, casting="unsafe"))
            # mild shading along a random direction keeps shapes from being flat
            phi = rng.uniform(0, 2 * math.pi)
            shade = 1.0 + 0.125 * (math.cos(phi) * u[mask] + math.sin(phi) * v[mask])
            values = np.clip(colour[:, None] * shade, 0, 255)
            for plane, value in zip(planes, values):  # a plane at a time: cheaper than one 2-D fancy assignment
                plane[pixels] = value
            k = len(full_area)
            owner.reshape(-1)[pixels] = k
            for j, n in hidden:
                visible[j] -= n
            if masks is not None:
                full = np.zeros((h, w), bool)
                full[cy0:cy1, cx0:cx1] = mask
                masks.append(full)
            # the box is the tight pixel extent of the mask (pixels are in row-major order)
            cols = pixels % w
            box = (float(cols.min()), float(pixels[0] // w), float(cols.max()), float(pixels[-1] // w))
            return box, area
        return None

    @staticmethod
    def _colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
        for _ in range(8):
            colour = rng.uniform(0, 255, 3).astype(np.float32)
            if np.abs(colour - background).sum() >= _MIN_CONTRAST:
                return colour
        return np.where(background > 127, 20.0, 235.0).astype(np.float32)

    def __repr__(self) -> str:
        fresh = ", new images every epoch" if self.fresh_per_epoch else ""
        return (
            f"SyntheticShapes({self.num_images} images, seed={self.seed}, size={self.image_size}, "
            f"classes={self._classes}{fresh})"
        )
