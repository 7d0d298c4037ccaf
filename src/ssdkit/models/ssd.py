"""The SSD network: a multi-scale feature extractor, per-layer conv heads and anchors.

Shape legend: B batch, A anchors (all layers), C foreground classes (``num_classes``, background
excluded; heads predict ``C + 1`` scores with class 0 = background), K_i anchors per position of layer i,
H_i x W_i size of feature map i.

``net(x)`` with ``x: Tensor[B, 3, H, W]`` (ImageNet-normalised RGB) returns, in train and eval mode alike,
``(cls_preds Tensor[B, A, C+1] logits, box_preds Tensor[B, A, 4] encoded offsets,
anchors_cxcywh Tensor[1, A, 4])``. The flat anchor index runs over (layer, y, x, anchor) as in GluonCV;
channel ``k * (C+1) + c`` of a class head is anchor k, class c. Anchors are computed from the feature
sizes of each forward (input pixels, preset steps), cached per (feature sizes, device, dtype).
``net.detect(x)`` is ``net.postprocessor(*net(x))``.

Parameter names follow GluonCV (``features.*``, ``class_predictors.i.predictor.*``,
``box_predictors.i.predictor.*``), so converted GluonCV parameters map by name.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..anchors import AnchorGrid, AnchorSpec, ssd_anchor_grid, ssd_anchors
from ..constants import BOX_STDS
from ..init import init_weights

__all__ = ["SSD", "ConvPredictor"]

_ANCHOR_CACHE_SIZE = 8


class ConvPredictor(nn.Module):
    """A conv head (GluonCV ``ConvPredictor``): ``Tensor[B, in, H, W] -> Tensor[B, out, H, W]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.predictor = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.predictor(x)


def _make_postprocessor(num_classes: int, stds: Sequence[float], **settings) -> nn.Module:
    from ..postprocess import PostProcessor  # lazy: keeps the model importable on its own

    return PostProcessor(num_classes, stds=tuple(stds), **settings)


def _postprocessor_settings(pp: nn.Module) -> dict:
    names = ("decoder", "nms_thresh", "nms_topk", "post_nms", "score_thresh", "force_suppress")
    return {n: getattr(pp, n) for n in names if hasattr(pp, n)}


def _flatten_nhwc(t: Tensor) -> Tensor:
    """``Tensor[B, K*D, H, W] -> Tensor[B, H*W*K*D]`` in (y, x, channel) order."""
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)


class SSD(nn.Module):
    """Single Shot MultiBox detector.

    Args:
        features: module mapping ``Tensor[B, 3, H, W]`` to a list of feature maps, one per anchor layer.
            It should provide ``added_layers()`` (the extra blocks it adds to an ImageNet backbone).
        feature_channels: channels of each feature map.
        anchor_spec: anchor preset (sizes, ratios, steps), one layer per feature map.
        classes: foreground class names (``num_classes = len(classes)``).
        data_shape: default (training) input side in pixels.
        name: model name (zoo name for zoo models).
        head_init: init scheme of the heads (``reset_class`` reuses it for new class heads).
    """

    def __init__(
        self,
        features: nn.Module,
        feature_channels: Sequence[int],
        anchor_spec: AnchorSpec,
        classes: Sequence[str],
        *,
        data_shape: int,
        name: str = "ssd",
        stds: Sequence[float] = BOX_STDS,
        nms_thresh: float = 0.45,
        nms_topk: int = 400,
        post_nms: int = 100,
        decoder: str = "per_class",
        head_init: str = "xavier",
        predictor_kernel: int = 3,
        predictor_pad: int = 1,
    ):
        super().__init__()
        classes = _check_classes(classes)
        if len(feature_channels) != anchor_spec.num_layers:
            raise ValueError(
                f"{name}: {len(feature_channels)} feature maps but the anchor preset has "
                f"{anchor_spec.num_layers} layers"
            )
        self.features = features
        self.feature_channels = tuple(int(c) for c in feature_channels)
        self.anchor_spec = anchor_spec
        self.classes = classes
        self.data_shape = int(data_shape)
        self.name = name
        self.stds = tuple(float(s) for s in stds)
        self.head_init = head_init
        per_pos = anchor_spec.anchors_per_position()
        self.class_predictors = nn.ModuleList(
            ConvPredictor(c, k * (len(classes) + 1), predictor_kernel, predictor_pad)
            for c, k in zip(self.feature_channels, per_pos)
        )
        self.box_predictors = nn.ModuleList(
            ConvPredictor(c, k * 4, predictor_kernel, predictor_pad) for c, k in zip(self.feature_channels, per_pos)
        )
        for head in (*self.class_predictors, *self.box_predictors):
            init_weights(head, head_init)
        self.postprocessor = _make_postprocessor(
            len(classes), self.stds, decoder=decoder, nms_thresh=nms_thresh, nms_topk=nms_topk, post_nms=post_nms
        )
        self._anchor_cache: dict = {}

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        """Number of foreground classes (background excluded)."""
        return len(self.classes)

    def added_layers(self) -> list[nn.Module]:
        """The layers added to the ImageNet backbone: extra blocks, then class heads, then box heads."""
        extras = list(self.features.added_layers()) if hasattr(self.features, "added_layers") else []
        return extras + list(self.class_predictors) + list(self.box_predictors)

    # ------------------------------------------------------------------ forward
    def anchors_for(
        self, feature_shapes: Sequence[tuple[int, int]], device=None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Anchors ``Tensor[1, A, 4]`` (cx, cy, w, h) for the given feature sizes, cached."""
        key = (tuple(tuple(int(v) for v in s) for s in feature_shapes), torch.device(device or "cpu"), dtype)
        anchors = self._anchor_cache.get(key)
        if anchors is None:
            if len(self._anchor_cache) >= _ANCHOR_CACHE_SIZE:
                self._anchor_cache.clear()
            anchors = ssd_anchors(self.anchor_spec, key[0], device=device, dtype=dtype)
            self._anchor_cache[key] = anchors
        return anchors

    def anchor_grid_for(self, feature_shapes: Sequence[tuple[int, int]]) -> AnchorGrid:
        """The per-layer grid layout of :meth:`anchors_for` ``(feature_shapes)``, for separable target IoUs."""
        return ssd_anchor_grid(self.anchor_spec, feature_shapes)

    @torch.no_grad()
    def feature_shapes_for_input(self, height: int | None = None, width: int | None = None) -> list[tuple[int, int]]:
        """``(H, W)`` of every feature map for an input of ``height x width`` (default ``data_shape``). Runs the
        backbone once on zeros in eval mode (so no BatchNorm statistics change), on the parameters' device."""
        height = int(height or self.data_shape)
        width = int(width or height)
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            feats = self.features(torch.zeros(1, 3, height, width, device=param.device, dtype=param.dtype))
        finally:
            self.train(was_training)
        return [(int(f.shape[-2]), int(f.shape[-1])) for f in feats]

    def anchors_for_input(self, height: int | None = None, width: int | None = None) -> Tensor:
        """Anchors ``Tensor[1, A, 4]`` for an input of ``height x width`` (default ``data_shape``), e.g. for
        computing training targets in a data loader, on the parameters' device."""
        return self.anchors_for(self.feature_shapes_for_input(height, width), device=next(self.parameters()).device)

    def anchor_grid_for_input(self, height: int | None = None, width: int | None = None) -> AnchorGrid:
        """The :class:`ssdkit.anchors.AnchorGrid` of :meth:`anchors_for_input` (pass it to ``TargetCollate``)."""
        return self.anchor_grid_for(self.feature_shapes_for_input(height, width))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``Tensor[B, 3, H, W] -> (Tensor[B, A, C+1], Tensor[B, A, 4], Tensor[1, A, 4])``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected input Tensor[B, 3, H, W], got shape {tuple(x.shape)}")
        feats = self.features(x)
        if len(feats) != len(self.class_predictors):
            raise ValueError(
                f"{self.name}: backbone gave {len(feats)} feature maps, heads expect {len(self.class_predictors)}"
            )
        batch = x.shape[0]
        cls_preds = torch.cat([_flatten_nhwc(cp(f)) for f, cp in zip(feats, self.class_predictors)], dim=1)
        box_preds = torch.cat([_flatten_nhwc(bp(f)) for f, bp in zip(feats, self.box_predictors)], dim=1)
        cls_preds = cls_preds.reshape(batch, -1, self.num_classes + 1)
        box_preds = box_preds.reshape(batch, -1, 4)
        # anchors stay float32 (float64 for float64 inputs) even under autocast: they are pixel coordinates
        anchors = self.anchors_for(
            [tuple(f.shape[-2:]) for f in feats],
            device=x.device,
            dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
        )
        return cls_preds, box_preds, anchors

    @torch.no_grad()
    def detect(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(ids Tensor[B, K, 1], scores Tensor[B, K, 1], bboxes_xyxy Tensor[B, K, 4])``, padded with -1."""
        return self.postprocessor(*self(x))

    # ------------------------------------------------------------------ inference settings
    def set_nms(self, nms_thresh: float = 0.45, nms_topk: int = 400, post_nms: int = 100) -> None:
        """NMS settings of ``detect`` (GluonCV semantics: thresh outside (0, 1) disables NMS, -1 keeps all)."""
        self.postprocessor.nms_thresh = nms_thresh
        self.postprocessor.nms_topk = nms_topk
        self.postprocessor.post_nms = post_nms

    def set_decoder(self, name: str) -> None:
        """Class decoder of ``detect``: ``"per_class"`` (GluonCV default) or ``"argmax"``."""
        if name not in ("per_class", "argmax"):
            raise ValueError(f"unknown decoder {name!r}; choose 'per_class' or 'argmax'")
        self.postprocessor.decoder = name

    # ------------------------------------------------------------------ class reset
    def reset_class(self, classes: Sequence[str], reuse_weights: Mapping | Sequence[str] | None = None) -> None:
        """Replace the class heads for new ``classes`` (GluonCV ``reset_class``); box heads are kept.

        ``reuse_weights`` maps new classes to old ones, ``{new: old}`` by name or index (mixable), or is a
        list of names present in both. For each mapped pair the head rows of that class are copied
        (stride ``C+1`` over output channels, i.e. for every anchor), and the background rows always are.
        """
        classes = _check_classes(classes)
        old_classes = self.classes
        mapping = _resolve_reuse(reuse_weights, old_classes, classes)
        old_c1, new_c1 = len(old_classes) + 1, len(classes) + 1
        new_heads = []
        for old in self.class_predictors:
            conv = old.predictor
            k = conv.out_channels // old_c1
            head = ConvPredictor(conv.in_channels, k * new_c1, conv.kernel_size[0], conv.padding[0])
            init_weights(head, self.head_init)
            head.to(device=conv.weight.device, dtype=conv.weight.dtype)
            if mapping:
                with torch.no_grad():
                    for new_p, old_p in ((head.predictor.weight, conv.weight), (head.predictor.bias, conv.bias)):
                        for n_idx, o_idx in mapping.items():
                            new_p[n_idx + 1 :: new_c1] = old_p[o_idx + 1 :: old_c1]
                        new_p[0::new_c1] = old_p[0::old_c1]
            new_heads.append(head)
        self.class_predictors = nn.ModuleList(new_heads)
        self.classes = classes
        self.postprocessor = _make_postprocessor(len(classes), self.stds, **_postprocessor_settings(self.postprocessor))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, data_shape={self.data_shape}, num_classes={self.num_classes}"


def _check_classes(classes) -> tuple[str, ...]:
    if classes is None or isinstance(classes, str):
        raise ValueError(f"classes must be a sequence of class names, got {classes!r}")
    classes = tuple(str(c) for c in classes)
    if not classes:
        raise ValueError("classes must not be empty")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes contain duplicates: {classes}")
    return classes


def _resolve_reuse(reuse_weights, old_classes: Sequence[str], new_classes: Sequence[str]) -> dict[int, int]:
    """``{new index: old index}`` from a GluonCV-style ``reuse_weights`` (dict by name/index, or list)."""
    if reuse_weights is None:
        return {}
    if isinstance(reuse_weights, Mapping):
        out = {}
        for k, v in reuse_weights.items():
            out[_index_of(k, new_classes, "new")] = _index_of(v, old_classes, "old")
        return out
    if isinstance(reuse_weights, (list, tuple)):
        out = {}
        for name in reuse_weights:
            if name in new_classes and name in old_classes:
                out[new_classes.index(name)] = old_classes.index(name)
            else:
                warnings.warn(
                    f"{name!r} not found in old class names {list(old_classes)} or new class names {list(new_classes)}",
                    stacklevel=3,
                )
        return out
    raise ValueError(f"reuse_weights must be a dict, a list of names or None, got {type(reuse_weights).__name__}")


def _index_of(key, names: Sequence[str], which: str) -> int:
    if isinstance(key, str):
        if key not in names:
            raise ValueError(f"{key!r} not found in {which} class names {list(names)}")
        return names.index(key)
    idx = int(key)
    if idx < 0 or idx >= len(names):
        raise ValueError(f"index {idx} out of bounds for {which} class names ({len(names)} classes)")
    return idx
