"""Run logging: ``metrics.csv`` (one row per evaluation), TensorBoard scalars, PNG plots of loss and mAP."""
from __future__ import annotations

import csv
import os
from typing import Any

__all__ = ["RunLogger"]


class RunLogger:
    """Writes into a run folder. ``log_train`` per logged step, ``log_eval`` per evaluation, ``plot`` at the end."""

    def __init__(self, folder: str, tensorboard: bool = True):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.csv_path = os.path.join(folder, "metrics.csv")
        self.train_curve: list[tuple[float, float]] = []  # (epoch as float, loss)
        self.eval_rows: list[dict[str, Any]] = []
        if os.path.exists(self.csv_path):  # a resumed run: keep its history
            with open(self.csv_path, newline="") as f:
                self.eval_rows = [dict(r) for r in csv.DictReader(f)]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(os.path.join(folder, "tensorboard"))
            except Exception:  # tensorboard missing or broken: the CSV and plots still work
                self.writer = None

    def log_train(self, step: int, epoch_float: float, values: dict[str, float]) -> None:
        self.train_curve.append((epoch_float, values["loss"]))
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"train/{k}", v, step)

    def log_eval(self, row: dict[str, Any], step: int) -> None:
        """Append one evaluation row (must hold ``epoch``; ``voc07_map`` or ``coco_ap``...)."""
        self.eval_rows = [r for r in self.eval_rows if int(float(r["epoch"])) != int(row["epoch"])] + [row]
        keys: list[str] = []
        for r in self.eval_rows:
            keys += [k for k in r if k not in keys]
        tmp = self.csv_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in self.eval_rows:
                w.writerow({k: r.get(k, "") for k in keys})
        os.replace(tmp, self.csv_path)
        if self.writer is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"val/{k}", v, step)

    def plot(self, metric_key: str) -> list[str]:
        """Write ``loss.png`` and ``map.png``; returns the paths written."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        written = []
        loss_rows = [(float(r["epoch"]), float(r["train_loss"])) for r in self.eval_rows if r.get("train_loss")]
        if self.train_curve or loss_rows:
            fig, ax = plt.subplots(figsize=(6, 4))
            if self.train_curve:
                ax.plot(*zip(*self.train_curve), lw=0.8, alpha=0.6, label="train loss (logged steps)")
            if loss_rows:
                ax.plot(*zip(*loss_rows), "o-", label="train loss (epoch mean)")
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss (per positive)")
            ax.grid(alpha=0.3)
            ax.legend()
            path = os.path.join(self.folder, "loss.png")
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
        map_rows = [(float(r["epoch"]), float(r[metric_key])) for r in self.eval_rows if r.get(metric_key) not in
                    (None, "", "nan")]
        if map_rows:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(*zip(*map_rows), "o-")
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric_key)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            path = os.path.join(self.folder, "map.png")
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
        return written

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
