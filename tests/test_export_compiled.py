"""CompiledDetector: the Inductor-compiled detector finds what ``net.detect`` finds."""

import torch

import ssdkit
from ssdkit.export.compiled import CompiledDetector


def _net():
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_tiny_synthetic").eval()
    with torch.no_grad():  # a confident background, as a trained detector: a few hundred candidates, not all
        for head in net.class_predictors:
            head.predictor.bias[0 :: net.num_classes + 1] += 4.0
    return net


def test_compiled_fp32_equals_detect_at_two_batch_sizes():
    net = _net()
    detector = CompiledDetector(net, bf16=False)
    for batch in (1, 3):
        x = torch.rand(batch, 3, net.data_shape, net.data_shape)
        ids, scores, boxes = detector(x)
        ref_ids, ref_scores, ref_boxes = net.detect(x)
        assert (ref_ids >= 0).sum() > 20  # real candidates, not only padding
        torch.testing.assert_close(ids, ref_ids)
        torch.testing.assert_close(scores, ref_scores, rtol=0, atol=1e-4)
        torch.testing.assert_close(boxes, ref_boxes, rtol=0, atol=1e-3)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) > 0  # the original is untouched


def test_compiled_bf16_keeps_the_strongest_detections():
    net = _net()
    x = torch.rand(2, 3, net.data_shape, net.data_shape)
    ids, scores, boxes = CompiledDetector(net, bf16=True)(x)
    ref_ids, ref_scores, ref_boxes = net.detect(x)
    assert scores.dtype == torch.float32 and boxes.shape == ref_boxes.shape
    # bfloat16 keeps 8 bits of mantissa: scores agree to about 1 %, the best detection of each image is the same
    torch.testing.assert_close(scores[:, 0], ref_scores[:, 0], rtol=0, atol=0.02)
    torch.testing.assert_close(ids[:, 0], ref_ids[:, 0])
    torch.testing.assert_close(boxes[:, 0], ref_boxes[:, 0], rtol=0, atol=1.5)
