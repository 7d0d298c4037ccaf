"""Run logging: ``metrics.csv`` (one row per evaluation), ``epochs.csv`` (one row per epoch: loss, lr, speed),
TensorBoard scalars, PNG plots of loss (every epoch's mean) and mAP (every evaluation)."""

from __future__ import annotations

import csv
import os
from typing import Any

__all__ = ["RunLogger"]


class RunLogger:
    """Writes into a run folder. ``log_train`` per logged step, ``log_epoch`` per epoch, ``log_eval`` per evaluation,
    ``plot`` at the end. ``keep_history`` (a resumed run) continues the folder's ``metrics.csv``, ``epochs.csv`` and
    TensorBoard events (:meth:`resume_at` hides the events past the checkpoint, which the run logs again); without
    it a new run in a folder used before starts them anew, so that no row or curve of the earlier run (an epoch it
    reached and this one does not) stays among this run's."""

    def __init__(self, folder: str, tensorboard: bool = True, keep_history: bool = True):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.csv_path = os.path.join(folder, "metrics.csv")
        self.epochs_path = os.path.join(folder, "epochs.csv")
        self.train_curve: list[tuple[float, float]] = []  # (epoch as float, loss)
        self.tensorboard_dir = os.path.join(folder, "tensorboard")
        if not keep_history:
            for path in (self.csv_path, self.epochs_path):
                if os.path.exists(path):
                    os.remove(path)
            if os.path.isdir(self.tensorboard_dir):
                for name in os.listdir(self.tensorboard_dir):
                    if name.startswith("events.out.tfevents."):
                        os.remove(os.path.join(self.tensorboard_dir, name))
        self.eval_rows = _read_rows(self.csv_path)
        self.epoch_rows = _read_rows(self.epochs_path)
        self._tensorboard = tensorboard
        self._purge_step: int | None = None
        self._writer = None

    def resume_at(self, step: int) -> None:
        """The run goes on after logged step ``step``: TensorBoard hides the earlier events past it (steps the
        interrupted run logged after its checkpoint, which this one logs again). Call before the first log."""
        self._purge_step = int(step) + 1

    @property
    def writer(self):
        """The TensorBoard writer, opened at the first scalar (None without TensorBoard)."""
        if self._writer is None and self._tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(self.tensorboard_dir, purge_step=self._purge_step)
            except Exception:  # tensorboard missing or broken: the CSV and plots still work
                self._tensorboard = False
        return self._writer

    def log_train(self, step: int, epoch_float: float, values: dict[str, float]) -> None:
        self.train_curve.append((epoch_float, values["loss"]))
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"train/{k}", v, step)

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Append one finished epoch's row (must hold ``epoch`` and ``train_loss``, the epoch's mean)."""
        self.epoch_rows = _replace_epoch(self.epoch_rows, row)
        _write_rows(self.epochs_path, self.epoch_rows)

    def log_eval(self, row: dict[str, Any], step: int) -> None:
        """Append one evaluation row (must hold ``epoch``; ``voc07_map`` or ``coco_ap``...)."""
        self.eval_rows = _replace_epoch(self.eval_rows, row)
        _write_rows(self.csv_path, self.eval_rows)
        if self.writer is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"val/{k}", v, step)

    def elapsed_after(self, epoch: int) -> float:
        """The run's seconds when epoch ``epoch`` (1-based) was logged: where a resumed run's clock goes on (0 when
        no row of that epoch says)."""
        for rows in (self.epoch_rows, self.eval_rows):
            for r in rows:
                if int(float(r["epoch"])) == int(epoch) and r.get("elapsed_s") not in (None, ""):
                    return float(r["elapsed_s"])
        return 0.0

    def epoch_losses(self) -> list[tuple[int, float]]:
        """``(epoch, mean training loss)`` of every finished epoch (of the evaluated ones for runs logged before
        ``epochs.csv`` existed)."""
        rows = self.epoch_rows or self.eval_rows
        return sorted(
            (int(float(r["epoch"])), float(r["train_loss"])) for r in rows if r.get("train_loss") not in (None, "")
        )

    def eval_points(self, metric_key: str) -> list[tuple[int, float]]:
        """``(epoch, metric)`` of every evaluation."""
        return sorted(
            (int(float(r["epoch"])), float(r[metric_key]))
            for r in self.eval_rows
            if r.get(metric_key) not in (None, "", "nan")
        )

    def plot(self, metric_key: str) -> list[str]:
        """Write ``loss.png`` (every epoch's mean loss, and the logged steps) and ``map.png`` (every evaluation);
        returns the paths written."""
        from matplotlib.figure import Figure  # no pyplot: no backend to choose, no figure left open

        written = []
        loss_rows = self.epoch_losses()
        if self.train_curve or loss_rows:
            fig = Figure(figsize=(7, 4.2))
            ax = fig.add_subplot(1, 1, 1)
            if self.train_curve:
                ax.plot(*zip(*self.train_curve), lw=0.8, alpha=0.45, color="tab:blue", label="logged steps")
            if loss_rows:
                # a mean over epoch e covers [e - 1, e]: drawn at its middle, on top of the steps it averages
                ax.plot(
                    [e - 0.5 for e, _ in loss_rows],
                    [v for _, v in loss_rows],
                    "o-",
                    color="tab:orange",
                    lw=2,
                    ms=5,
                    label="epoch mean",
                )
            ax.set_title("training loss")
            _style_epoch_axis(ax, [e for e, _ in loss_rows])
            ax.set_ylabel("loss (per positive anchor)")
            ax.legend(loc="upper right")
            written.append(self._save(fig, "loss.png"))
        map_rows = self.eval_points(metric_key)
        if map_rows:
            fig = Figure(figsize=(7, 4.2))
            ax = fig.add_subplot(1, 1, 1)
            ax.plot(*zip(*map_rows), "o-", color="tab:green", lw=2, ms=6)
            for e, v in map_rows if len(map_rows) <= 20 else []:
                ax.annotate(f"{v:.3f}", (e, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=9)
            best_epoch, best = max(map_rows, key=lambda r: r[1])
            ax.set_title(f"validation {metric_key} (best {best:.4f} at epoch {best_epoch})")
            _style_epoch_axis(ax, [e for e, _ in map_rows])
            ax.set_ylabel(metric_key)
            ax.set_ylim(0, 1.05)
            written.append(self._save(fig, "map.png"))
        return written

    def _save(self, fig, name: str) -> str:
        path = os.path.join(self.folder, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _read_rows(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]


def _replace_epoch(rows: list[dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in rows if int(float(r["epoch"])) != int(row["epoch"])] + [row]


def _write_rows(path: str, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``path`` atomically with the union of the rows' keys as columns."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})
    os.replace(tmp, path)


def _style_epoch_axis(ax, epochs: list[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs:
        ax.set_xlim(0, max(epochs) + 0.5)
    ax.grid(alpha=0.3)
