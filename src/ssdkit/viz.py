"""Drawing detections on matplotlib, under GluonCV's names (``gluoncv.utils.viz``).

``plot_bbox(img, bboxes, scores, labels, thresh, class_names)`` draws each box with ``score >= thresh`` and
``label >= 0`` in its class's colour, with ``"name score"`` on a filled background of that colour, and returns
the axes. Unlike GluonCV, colours are fixed per class id (not random) and, unless given, the line width and font
size follow the image size, so a label stays readable on a large photo and does not cover a small one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["plot_image", "plot_bbox", "class_color", "save_detections"]


def _to_numpy(x):
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().numpy()
    elif hasattr(x, "asnumpy"):  # mxnet NDArray
        x = x.asnumpy()
    return np.asarray(x)


def _to_hwc_image(img) -> np.ndarray:
    """An image ``[H, W, 3]`` (numpy, GluonCV's layout) or ``[3, H, W]`` (torch) as ``uint8 [H, W, 3]``."""
    arr = _to_numpy(img)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def class_color(cls_id: int) -> tuple[float, float, float]:
    """A fixed, distinct RGB colour per class id (matplotlib's tab20 order: strong tones first)."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    if cls_id < 0:
        return (0.5, 0.5, 0.5)
    slot = (2 * cls_id) % 20 + (cls_id // 10) % 2  # 0, 2, 4, ... (dark tones), then 1, 3, 5 ... (light)
    return tuple(float(c) for c in cmap(slot)[:3])


def _text_color(rgb: Sequence[float]) -> str:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return "black" if luminance > 0.6 else "white"


def plot_image(img, ax=None, reverse_rgb: bool = False):
    """Show ``img`` (``[H, W, 3]`` numpy or ``[3, H, W]`` tensor) on ``ax`` (a new figure when None)."""
    import matplotlib.pyplot as plt

    arr = _to_hwc_image(img)
    if reverse_rgb:
        arr = arr[:, :, ::-1]
    if ax is None:
        fig = plt.figure()
        ax = fig.add_subplot(1, 1, 1)
    ax.imshow(arr)
    return ax


def plot_bbox(
    img,
    bboxes,
    scores=None,
    labels=None,
    thresh: float = 0.5,
    class_names: Sequence[str] | None = None,
    colors: dict | None = None,
    ax=None,
    reverse_rgb: bool = False,
    absolute_coordinates: bool = True,
    linewidth: float | None = None,
    fontsize: float | None = None,
):
    """Draw ``bboxes`` (``[N, 4]`` xyxy) on ``img``; returns the matplotlib axes.

    ``scores`` and ``labels`` are ``[N]`` or ``[N, 1]`` (numpy, torch or anything array-like); a box is drawn when
    its score is at least ``thresh`` and its label is not negative (GluonCV's -1 padding). ``colors`` maps class
    ids to RGB tuples (default :func:`class_color`). With ``absolute_coordinates=False`` the boxes are fractions
    of the image size. ``linewidth`` (points) and ``fontsize`` default to values that grow with the image.
    """
    from matplotlib import patches

    arr = _to_hwc_image(img)
    height, width = arr.shape[:2]
    ax = plot_image(arr, ax=ax, reverse_rgb=reverse_rgb)
    boxes = _to_numpy(bboxes)
    if boxes is None or len(boxes) < 1:
        return ax
    boxes = boxes.reshape(-1, 4).astype(np.float64)
    if labels is not None and len(boxes) != _to_numpy(labels).size:
        raise ValueError("the length of labels and bboxes mismatch")
    if scores is not None and len(boxes) != _to_numpy(scores).size:
        raise ValueError("the length of scores and bboxes mismatch")
    if not absolute_coordinates:
        boxes = boxes * np.array([width, height, width, height])
    scores_flat = None if scores is None else _to_numpy(scores).reshape(-1)
    labels_flat = None if labels is None else _to_numpy(labels).reshape(-1)
    side = min(height, width)
    lw = linewidth if linewidth is not None else float(np.clip(side / 200, 1.0, 4.0))
    fs = fontsize if fontsize is not None else float(np.clip(side / 40, 6.0, 18.0))
    colors = {} if colors is None else colors
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if scores_flat is not None and scores_flat[i] < thresh:
            continue
        cls_id = int(labels_flat[i]) if labels_flat is not None else -1
        if labels_flat is not None and cls_id < 0:
            continue
        color = colors.setdefault(cls_id, class_color(cls_id))
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=lw))
        name = (
            class_names[cls_id]
            if class_names is not None and 0 <= cls_id < len(class_names)
            else (str(cls_id) if cls_id >= 0 else "")
        )
        score = f"{scores_flat[i]:.3f}" if scores_flat is not None else ""
        text = f"{name} {score}".strip()
        if text:
            # the label sits above the box's top-left corner, or inside the box when that is off the image
            inside = y1 < fs * 2
            ax.text(
                x1,
                y1 if inside else y1 - lw / 2,
                text,
                fontsize=fs,
                color=_text_color(color),
                va="top" if inside else "bottom",
                ha="left",
                clip_on=True,
                bbox=dict(facecolor=color, edgecolor="none", alpha=0.85, boxstyle="square,pad=0.2"),
            )
    return ax


def save_detections(
    img,
    path: str,
    bboxes,
    scores,
    labels,
    class_names: Sequence[str] | None = None,
    thresh: float = 0.0,
    dpi: int = 100,
) -> str:
    """Write ``img`` with :func:`plot_bbox`'s drawing to ``path`` at the image's own pixel size. Returns ``path``."""
    from matplotlib.figure import Figure  # no pyplot: works under any backend, leaves no open figure

    arr = _to_hwc_image(img)
    height, width = arr.shape[:2]
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    plot_bbox(arr, bboxes, scores, labels, thresh=thresh, class_names=class_names, ax=ax)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    fig.savefig(path, dpi=dpi)
    return path
