"""A detector whose network runs in int8 on a CPU: static post-training quantization, compiled with Inductor.

The network (backbone, extras, heads) is captured with ``torch.export``, quantized with the PT2E flow of ``torchao``
and its ``X86InductorQuantizer`` (per-channel symmetric int8 weights, per-tensor uint8 activations whose ranges come
from calibration images), and compiled with Inductor's freezing, which lowers the quantized convolutions to oneDNN's
int8 kernels (AVX512-VNNI / AMX where the CPU has them, AVX2 otherwise). Decoding and NMS stay eager and in float32.

Quantization changes the scores and boxes by more than float rounding: measure the mAP of a quantized model on a
validation set before deploying it (``benchmarks/bench_int8_accuracy.py`` does that for a checkpoint). The
calibration images should be what the detector will see, preprocessed as ``net.detect`` takes them.

Ceil-mode max pooling (VGG16's ``75 -> 38``) is rewritten as zero right/bottom padding plus floor-mode pooling
before quantizing, because Inductor's int8 max-pool lowering drops ``ceil_mode`` (a 38 x 38 map comes out 37 x 37).
The two agree exactly when the pooled values are non-negative, which holds after the ReLU that precedes every such
pool in the zoo; any other ceil-mode pool is refused.

Needs the optional ``torchao`` package (``pip install torchao``).
"""

from __future__ import annotations

import os
import warnings
from typing import Iterable

import torch
from torch import Tensor, fx, nn

from .fuse import inference_copy

__all__ = ["Int8Detector", "explicit_ceil_pools", "int8_needs_reduced_range"]

_RELUS = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) whose int8 kernels have no VNNI instruction
_NO_VNNI_CAPS = {"SSE41", "AVX", "AVX2", "AVX512_CORE"}


def int8_needs_reduced_range() -> bool:
    """True where oneDNN's int8 convolutions run without VNNI (AVX2 CPUs, or a cap set by ``ONEDNN_MAX_CPU_ISA``):
    there the uint8 x int8 products are summed in pairs into 16 bits (``vpmaddubsw``), which saturates unless the
    activations keep to 7 bits, so they are quantized to 0..127 instead of 0..255."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    has_vnni = getattr(torch.cpu, "_is_vnni_supported", None)  # private in PyTorch: without it, assume none
    return cap in _NO_VNNI_CAPS or has_vnni is None or not has_vnni()


def _extra_padding(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Right padding that makes floor-mode pooling of ``size`` give ceil mode's output length (PyTorch's rule)."""
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + stride - 1) // stride + 1
    if (out - 1) * stride >= size + padding:  # the last window would start in the right padding
        out -= 1
    return max(0, (out - 1) * stride + span - (size + 2 * padding))


def explicit_ceil_pools(gm: fx.GraphModule) -> int:
    """Rewrite every ``aten.max_pool2d(..., ceil_mode=True)`` of an exported graph as zero padding + floor mode, in
    place. Needs static spatial sizes in the nodes' ``meta["val"]`` and a ReLU before each such pool (so that zero
    padding never wins a max). Returns the number of pools rewritten."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.target != torch.ops.aten.max_pool2d.default:
            continue
        args = list(node.args) + [None] * (6 - len(node.args))
        source, kernel, stride, padding, dilation, ceil_mode = args
        ceil_mode = node.kwargs.get("ceil_mode", ceil_mode)
        if not ceil_mode:
            continue
        kernel = list(kernel)
        stride = list(stride or kernel)
        padding = list(padding or [0, 0])
        dilation = list(dilation or [1, 1])
        kernel, stride, padding, dilation = (v * 2 if len(v) == 1 else v for v in (kernel, stride, padding, dilation))
        height, width = (int(s) for s in source.meta["val"].shape[-2:])
        extra = [
            _extra_padding(n, *params) for n, params in zip((height, width), zip(kernel, stride, padding, dilation))
        ]
        if any(extra) and source.target not in _RELUS:
            raise ValueError(f"int8: the ceil-mode max pool {node.name} does not follow a ReLU; it cannot be rewritten")
        # the pool node keeps its metadata (its output is unchanged): the quantizer reads the shapes there
        if any(extra):
            pad = [0, extra[1], 0, extra[0]]
            with gm.graph.inserting_before(node):
                padded = gm.graph.call_function(torch.ops.aten.constant_pad_nd.default, (source, pad, 0.0))
            padded.meta = {**source.meta, "val": torch.ops.aten.constant_pad_nd.default(source.meta["val"], pad, 0.0)}
            source = padded
        node.args = (source, kernel, stride, padding, dilation, False)
        node.kwargs = {}
        count += 1
    gm.graph.lint()
    gm.recompile()
    return count


class Int8Detector:
    """``detector(x)`` approximates ``net.detect(x)`` with the network in int8 (static quantization).

    Args:
        net: an :class:`~ssdkit.models.SSD`; a BatchNorm-folded copy is quantized (``net`` is untouched).
        calibration: batches ``Tensor[B, 3, H, W]`` of preprocessed images at the size the detector will run; the
            activation ranges are observed on all of them (a few hundred images is plenty).
        channels_last: NHWC activations (oneDNN's layout for int8 convolutions).
        reduce_range: 7-bit activations (None: where :func:`int8_needs_reduced_range`, i.e. without VNNI).

    The quantized graph accepts any batch size; Inductor compiles it once per batch size at the first call.
    """

    def __init__(
        self,
        net: nn.Module,
        calibration: Iterable[Tensor],
        channels_last: bool = True,
        reduce_range: bool | None = None,
    ):
        try:
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86q
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        except ImportError as err:
            raise ImportError("int8 inference needs the torchao package: pip install torchao") from err
        self.net = inference_copy(net, channels_last=channels_last)
        if next(self.net.parameters()).device.type != "cpu":
            raise ValueError("int8 inference runs on the CPU only")
        self.channels_last = channels_last
        batches = iter(calibration)
        first = next(batches, None)
        if first is None:
            raise ValueError("int8 calibration needs at least one batch of images")
        batch = torch.export.Dim("batch", min=1, max=4096)
        with torch.no_grad(), warnings.catch_warnings():
            # the anchors are cached on the module at the first call; export keeps them as a constant, as wanted
            warnings.filterwarnings("ignore", message=r"The tensor attribute self\._anchor_cache")
            example = first if len(first) > 1 else first.repeat(2, 1, 1, 1)  # export would take batch 1 as a constant
            exported = torch.export.export(self.net, (self._layout(example),), dynamic_shapes=({0: batch},))
            graph = exported.module()
            explicit_ceil_pools(graph)
            quantizer = x86q.X86InductorQuantizer()
            self.reduce_range = int8_needs_reduced_range() if reduce_range is None else bool(reduce_range)
            quantizer.set_global(x86q.get_default_x86_inductor_quantization_config(reduce_range=self.reduce_range))
            observed = prepare_pt2e(graph, quantizer)
            observed(self._layout(first))
            for images in batches:
                observed(self._layout(images))
            self.quantized = convert_pt2e(observed)
        self._forward = torch.compile(self.quantized, dynamic=False)

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``Tensor[B, 3, H, W]`` -> ``(ids Tensor[B, K, 1], scores Tensor[B, K, 1], bboxes_xyxy Tensor[B, K, 4])``."""
        import torch._inductor.config as inductor_config

        with torch.no_grad(), inductor_config.patch(freezing=True):
            cls_preds, box_preds, anchors = self._forward(self._layout(x))
        return self.postprocessor(cls_preds.float(), box_preds.float(), anchors.float())

    # an SSD's inference interface, so that code written for a network (``engine.validate.evaluate``) takes this too
    def detect(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The same as calling the detector."""
        return self(x)

    @property
    def postprocessor(self) -> nn.Module:
        """The decoding and NMS module (its ``decoder`` can be switched as a network's)."""
        module = self.net.postprocessor
        assert isinstance(module, nn.Module)
        return module

    def eval(self) -> Int8Detector:
        return self
