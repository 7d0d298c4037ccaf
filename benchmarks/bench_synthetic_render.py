"""The synthetic data set's rasteriser against the one of an earlier commit: identical outputs, and ms per image.

    python benchmarks/bench_synthetic_render.py --against 6f3c2a1 --log benchmarks/results/synthetic_render.txt

The earlier ``src/ssdkit/data/synthetic.py`` is taken with ``git show`` into a temporary folder. Both draw the same
images (image, boxes, labels and masks must be equal, else the script stops), then time 300 images each, the two
alternating 7 times, on one core (the medians and ranges are printed), for the dense epochs' images (96 px, 5-20
objects) and the later ones (128 px, 1-10).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from ssdkit.data.synthetic import SyntheticShapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ((96, (5, 20)), (128, (1, 10)))


def earlier_class(commit: str, folder: str):
    source = subprocess.run(
        ["git", "show", f"{commit}:src/ssdkit/data/synthetic.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = os.path.join(folder, "synthetic_earlier.py")
    with open(path, "w") as f:
        f.write(
            source.replace("from .mixins", "from ssdkit.data.mixins").replace("from .sample", "from ssdkit.data.sample")
        )
    spec = importlib.util.spec_from_file_location("synthetic_earlier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SyntheticShapes


def make(cls, size: int, objects: tuple[int, int]):
    ds = cls(10**6, seed=11, image_size=128, min_objects=objects[0], max_objects=objects[1], fresh_per_epoch=True)
    ds.set_image_size(size)
    ds.set_epoch(3)
    return ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the earlier commit")
    parser.add_argument("--log", default=None)
    args = parser.parse_args()
    torch_threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = [f"synthetic rasteriser: this tree against {args.against}; {time.strftime('%Y-%m-%d %H:%M')}, "
             f"OMP_NUM_THREADS {torch_threads}"]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        Earlier = earlier_class(args.against, folder)
        for size, objects in CASES:
            earlier, now = make(Earlier, size, objects), make(SyntheticShapes, size, objects)
            for i in range(600):
                a, b = earlier.render(i, with_masks=True), now.render(i, with_masks=True)
                if not all(np.array_equal(x, y) for x, y in zip(a, b)):
                    sys.exit(f"image {i} at {size} px differs: the two rasterisers are not the same")
            times: dict[str, list[float]] = {"earlier": [], "now": []}
            for rep in range(7):
                for name, ds in (("earlier", earlier), ("now", now)):
                    first = 1000 + rep * 300
                    start = time.perf_counter()
                    for i in range(first, first + 300):
                        ds.render(i)
                    times[name].append((time.perf_counter() - start) / 300 * 1e3)
            med = {k: statistics.median(v) for k, v in times.items()}
            lines.append(
                f"{size} px, {objects[0]}-{objects[1]} objects: 600 images equal (image, boxes, labels, masks); ms per "
                f"image: earlier {med['earlier']:.3f} [{min(times['earlier']):.3f}, {max(times['earlier']):.3f}], "
                f"now {med['now']:.3f} [{min(times['now']):.3f}, {max(times['now']):.3f}]; "
                f"earlier / now {med['earlier'] / med['now']:.2f}"
            )
    print("\n".join(lines))
    if args.log:
        with open(args.log, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
