"""fold_batchnorm / inference_copy: the folded network computes what the original does (eval mode), fixed-gamma
BatchNorm included."""

import pytest
import torch
from torch import nn

from ssdkit.export.fuse import fold_batchnorm, inference_copy
from ssdkit.models.feature_expander import FixedGammaBatchNorm2d


def randomize_bn(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
                m.weight.uniform_(0.5, 1.5)  # ignored by the fixed-gamma layer, as in MXNet


def test_fold_equals_eval_forward():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        FixedGammaBatchNorm2d(8),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)),
    )
    randomize_bn(net)
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    ref = net(x)
    fast = inference_copy(net)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules()) == 0
    torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-5, atol=1e-5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 3  # the original is untouched
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(net.train())


def test_mobilenet_detector_detections():
    import ssdkit

    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_512_mobilenet1.0_voc").eval()
    randomize_bn(net)
    fast = inference_copy(net)
    x = torch.rand(1, 3, 256, 256)
    cls_ref, box_ref, _ = net(x)
    cls_fast, box_fast, _ = fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cls_fast, cls_ref, rtol=1e-4, atol=1e-4 * cls_ref.abs().max().item())
    torch.testing.assert_close(box_fast, box_ref, rtol=1e-4, atol=1e-4 * box_ref.abs().max().item())
