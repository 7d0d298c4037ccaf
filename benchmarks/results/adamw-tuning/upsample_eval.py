"""VOC07 mAP of trained checkpoints with the 128 px validation images upsampled (bilinear) to S px before detection,
the boxes scaled back to 128 px: whether a model trained on 96 px dense images and 128 px sparse ones finds more at
a larger inference size. Usage: python upsample_eval.py SEED NUM_VAL SIZES CKPT... (SEED -1: the run's own)."""

import dataclasses
import sys

import torch
import torch.nn.functional as F

from ssdkit.boxes import clip_boxes_xyxy
from ssdkit.engine.builders import build_datasets, build_loader, build_metric
from ssdkit.engine.config import resolve_config
from ssdkit.engine.evaluation import load_trained_model

torch.set_num_threads(1)
seed, nval, sizes = int(sys.argv[1]), int(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")]
for path in sys.argv[4:]:
    net, cfg, _ = load_trained_model(path, torch.device("cpu"))
    net.eval()
    own = {} if seed < 0 else {"seed": seed}
    cfg = resolve_config(
        dataclasses.replace(cfg, num_workers=0, device="cpu", resume=None, synthetic_val_size=nval, **own)
    )
    _, val_set, classes = build_datasets(cfg, 128, train=False, val=True)
    batches = list(build_loader(val_set, cfg, train=False))
    scores = []
    for size in sizes:
        metric = build_metric(cfg, classes, val_set, 128)
        metric.reset()
        with torch.no_grad():
            for b in batches:
                images = b["images"]
                if size != 128:
                    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
                ids, conf, boxes = net.detect(images)
                boxes = clip_boxes_xyxy(boxes * (128 / size), 128, 128)
                metric.update(boxes, ids, conf, b["gt_boxes"], b["gt_ids"], b["difficult"])
        scores.append(f"{size}: {float(metric.get()[1][-1]):.4f}")
    print(path, "  ".join(scores), flush=True)
