import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from torchvision import tv_tensors

torch.set_num_threads(min(2, os.cpu_count() or 1))

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
TOOLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def load_tool(name):
    """Import ``tools/<name>.py`` (a fixture script: its input generators need only NumPy)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def one_thread():
    """For modules of many tiny tensor ops, where intra-op threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data_dir():
    return DATA_DIR


SSD300_FEATURES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


def ssd300_spec():
    """The anchor preset of ssd_300_vgg16_atrous_voc, as published (no model needed)."""
    from ssdkit.anchors import AnchorSpec

    r1, r2 = (1, 2, 0.5), (1, 2, 0.5, 3, 1 / 3)
    return AnchorSpec(
        sizes=(30, 60, 111, 162, 213, 264, 315), ratios=(r1, r2, r2, r2, r1, r1), steps=(8, 16, 32, 64, 100, 300)
    )


def ssd300_anchors():
    """The anchors of ssd_300_vgg16_atrous_voc, ``Tensor[1, 8732, 4]``."""
    from ssdkit.anchors import ssd_anchors

    return ssd_anchors(ssd300_spec(), SSD300_FEATURES)


@pytest.fixture(scope="session")
def grid300():
    """The :class:`ssdkit.anchors.AnchorGrid` of :func:`ssd300_anchors`."""
    from ssdkit.anchors import ssd_anchor_grid

    return ssd_anchor_grid(ssd300_spec(), SSD300_FEATURES)


@pytest.fixture(scope="session")
def anchors300():
    return ssd300_anchors()


def seed_tutorial_gt():
    """The two ground-truth sets of the seed tutorial, padded with -1."""
    gt_ids = torch.tensor([[1, -1, -1, -1], [1, 3, 5, 7]], dtype=torch.float32)
    gt_boxes = -torch.ones(2, 4, 4)
    gt_boxes[0, 0] = torch.tensor([10, 20, 80, 90.0])
    gt_boxes[1] = torch.tensor([[10, 10, 30, 30], [40, 40, 60, 60], [50, 50, 90, 90], [100, 110, 120, 140.0]])
    return gt_boxes, gt_ids


def transform_sample(h=60, w=80, boxes=((5, 5, 30, 40), (40, 10, 78, 58), (10, 30, 20, 50)), dtype=torch.uint8, seed=0):
    """A ``(tv_tensors.Image [3, h, w], target)`` sample with three labelled boxes, for the transform tests."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), generator=g).to(dtype)
    n = len(boxes)
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=(h, w)
        ),
        "labels": torch.arange(n, dtype=torch.int64) + 10,
        "difficult": (torch.arange(n) % 2).to(torch.uint8),
        "image_id": "img",
        "path": "img.jpg",
        "orig_size": (h, w),
    }
    return tv_tensors.Image(image), target


def plain(t):
    """A tv_tensor as a plain tensor."""
    return t.as_subclass(torch.Tensor)


# A tiny ``ssdkit train`` run for the subprocess tests of the engine (torchrun, SIGKILL, SIGTERM): 16 synthetic
# images of 64 px, batch 4, 2 epochs (8 steps), float32 (bfloat16 autocast at this size gave a NaN gradient in
# about one run of three), one thread per process so that every launcher computes alike.
TINY_TRAIN = [
    "train",
    "--data-shape",
    "64",
    "--synthetic-train-size",
    "16",
    "--synthetic-val-size",
    "4",
    "--batch-size",
    "4",
    "--epochs",
    "2",
    "--num-workers",
    "0",
    "--no-progress",
    "--log-interval",
    "1",
    "--val-interval",
    "1",
    "--no-amp",
]
COMPARED = ("epoch", "train_loss", "train_cls_loss", "train_box_loss", "skipped_steps", "voc07_map")


def tiny_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")


def run_metrics(folder) -> list[tuple]:
    """The rows of a run's metrics.csv that must repeat exactly (not the timings)."""
    import csv

    with open(os.path.join(folder, "metrics.csv"), newline="") as f:
        return [tuple(row[k] for k in COMPARED) for row in csv.DictReader(f)]


def same_weights(folder_a, folder_b) -> bool:
    a = torch.load(os.path.join(folder_a, "last.pt"), weights_only=True)["model"]
    b = torch.load(os.path.join(folder_b, "last.pt"), weights_only=True)["model"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="session")
def tiny_run_procs2(tmp_path_factory):
    """The tiny ``ssdkit train`` run in two processes (``--procs 2``), uninterrupted: the reference that the
    torchrun, SIGKILL and SIGTERM runs must equal. Read it; do not write into its folder."""
    out = tmp_path_factory.mktemp("tiny-procs2") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ssdkit", *TINY_TRAIN, "--procs", "2", "--output", str(out)],
        env=tiny_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def tensorboard_losses(folder) -> list[tuple[int, float]]:
    """``[(step, loss)]`` of the run folder's TensorBoard curve ``train/loss``, as TensorBoard shows it."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    events = EventMultiplexer()
    events.AddRunsFromDirectory(str(folder / "tensorboard"))
    events.Reload()
    return sorted((e.step, round(e.value, 6)) for run in events.Runs() for e in events.Scalars(run, "train/loss"))
