"""predict_images: JSON boxes in original pixels and a picture drawn with plot_bbox; an unreadable image is an entry
with its error and does not stop the others; bad arguments are ConfigErrors naming the file."""

import os

import pytest
import torch
from torchvision.io import write_png

import ssdkit
from ssdkit.engine.checkpoint import save_checkpoint
from ssdkit.engine.config import ConfigError, TrainConfig
from ssdkit.engine.evaluation import predict_images


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_tiny_synthetic")
    path = str(folder / "best.pt")
    save_checkpoint(
        path,
        {
            "model": net.state_dict(),
            "config": TrainConfig(model="ssd_tiny_synthetic").to_dict(),
            "classes": list(net.classes),
            "model_name": net.name,
            "data_shape": net.data_shape,
        },
    )
    img = str(folder / "photo.png")
    write_png(torch.randint(0, 255, (3, 90, 160), dtype=torch.uint8), img)
    return path, img


def test_predict_json_and_picture(checkpoint, tmp_path):
    from PIL import Image

    path, img = checkpoint
    res = predict_images(path, [img], score_thresh=0.0, output=str(tmp_path), device="cpu")
    assert len(res) == 1 and res[0]["image"] == img
    dets = res[0]["detections"]
    assert 0 < len(dets) <= 100 and [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    classes = torch.load(path, weights_only=True)["classes"]
    for d in dets:
        x1, y1, x2, y2 = d["box_xyxy"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 90 and d["label"] in classes
    with Image.open(res[0]["picture"]) as im:
        assert im.size == (160, 90)


def test_bad_arguments(checkpoint, tmp_path):
    path, img = checkpoint
    with pytest.raises(ConfigError, match="either"):
        predict_images(None, [img])
    with pytest.raises(ConfigError, match="either"):
        predict_images(path, [img], onnx=path)
    with pytest.raises(ConfigError, match="photo.png"):
        predict_images(path, [img], output=img + "/sub", device="cpu")  # a folder inside a file


def test_bad_image_files_are_reported_and_do_not_stop_the_others(checkpoint, tmp_path):
    path, img = checkpoint
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    missing = str(tmp_path / "missing.png")
    res = predict_images(path, [missing, img, str(corrupt), img], output=str(tmp_path / "out"), device="cpu")
    assert [r["image"] for r in res] == [missing, img, str(corrupt), img]
    assert res[0] == {"image": missing, "error": "image file not found"}
    assert res[2]["error"].startswith("cannot decode image") and "picture" not in res[2]
    assert res[1]["detections"] == res[3]["detections"] and os.path.exists(res[1]["picture"])


def test_eval_leaves_an_unreadable_val_image_out_and_says_so(tmp_path):
    """`ssdkit eval` on a split with a corrupt image listed twice scores the other images once each: the same
    AP as the split without it, and the title counts the images scored."""
    from test_engine_builders_data import make_folder

    from ssdkit.engine.evaluation import evaluate_checkpoint

    make_folder(tmp_path)
    torch.manual_seed(0)
    net = ssdkit.get_model("ssd_tiny_custom", classes=["dot"])
    path = str(tmp_path / "dot.pt")
    cfg = TrainConfig(model="ssd_tiny_custom", dataset="voc-folder", data_root=str(tmp_path), classes=["dot"])
    save_checkpoint(
        path, {"model": net.state_dict(), "config": cfg.to_dict(), "classes": ["dot"], "model_name": net.name}
    )
    names, clean, title = evaluate_checkpoint(path, val_splits="val", device="cpu", batch_size=2)
    _, dirty, title_bad = evaluate_checkpoint(path, val_splits="valbad", device="cpu", batch_size=2)
    assert dirty == clean and "(3 images, decoder" in title
    assert "(3 images, 2 unreadable left out: " in title_bad and "bad.jpg" in title_bad
    from ssdkit.data.errors import BadSampleError

    with pytest.raises(BadSampleError, match="bad.jpg: cannot decode image"):
        evaluate_checkpoint(path, val_splits="valbad", device="cpu", batch_size=2, on_bad_sample="error")
