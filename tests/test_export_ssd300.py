"""SSD300-VGG16 (random weights) exported to ONNX: ONNX Runtime gives net.detect's detections at batch 1 and 3."""

import numpy as np
import pytest
import torch

import ssdkit

pytestmark = pytest.mark.slow  # one SSD300 export (~30 s on 2 cores)
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from test_export import assert_same_detections, calm_heads  # noqa: E402

from ssdkit.export import export_onnx, read_onnx_metadata  # noqa: E402


@pytest.fixture(scope="module")
def ssd300(tmp_path_factory):
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_300_vgg16_atrous_voc").eval()
    calm_heads(net, torch.rand(2, 3, 300, 300))
    path = export_onnx(net, str(tmp_path_factory.mktemp("ssd300") / "ssd300.onnx"))
    return net, ort.InferenceSession(path), path


def test_metadata(ssd300):
    net, _, path = ssd300
    meta = read_onnx_metadata(path)
    assert meta["classes"] == list(net.classes) and len(meta["classes"]) == 20 and meta["input_size"] == [300, 300]


def test_batch_1_and_3(ssd300):
    net, sess, _ = ssd300
    x = torch.rand(3, 3, 300, 300, generator=torch.Generator().manual_seed(3))
    for batch in (1, 3):
        got = sess.run(["ids", "scores", "boxes"], {"images": x[:batch].numpy()})
        assert_same_detections(net.detect(x[:batch]), got, count=100)  # > 100 candidates survive NMS
        assert np.unique(got[0]).size > 5  # detections of many classes
