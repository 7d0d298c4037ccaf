"""RunLogger: every epoch's mean loss and every evaluation reach the CSV files and the plots; a resumed run keeps
both histories."""

import csv
import math

import pytest

from ssdkit.engine.logger import RunLogger

from conftest import tensorboard_losses


def fake_run(folder, epochs=range(6), val_every=2, logger=None):
    logger = logger or RunLogger(str(folder), tensorboard=False)
    for epoch in epochs:
        for step in range(5):
            logger.log_train(epoch * 5 + step, epoch + step / 5, {"loss": 3.0 / (1 + epoch + step / 5)})
        row = {"epoch": epoch + 1, "lr": 0.01, "train_loss": 3.0 / (1.5 + epoch)}
        logger.log_epoch(row)
        if (epoch + 1) % val_every == 0:
            logger.log_eval({**row, "voc07_map": 1 - math.exp(-(epoch + 1) / 3)}, (epoch + 1) * 5)
    return logger


def test_every_epoch_mean_and_every_evaluation(tmp_path):
    logger = fake_run(tmp_path)
    assert [e for e, _ in logger.epoch_losses()] == [1, 2, 3, 4, 5, 6]
    assert [e for e, _ in logger.eval_points("voc07_map")] == [2, 4, 6]
    written = logger.plot("voc07_map")
    assert sorted(p.rsplit("/", 1)[-1] for p in written) == ["loss.png", "map.png"]
    for path in written:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(list(csv.DictReader(open(tmp_path / "epochs.csv")))) == 6
    assert len(list(csv.DictReader(open(tmp_path / "metrics.csv")))) == 3


def test_resumed_run_keeps_history(tmp_path):
    fake_run(tmp_path, epochs=range(3))
    resumed = fake_run(tmp_path, epochs=range(3, 6), logger=RunLogger(str(tmp_path), tensorboard=False))
    assert [e for e, _ in resumed.epoch_losses()] == [1, 2, 3, 4, 5, 6]
    assert [e for e, v in resumed.eval_points("voc07_map")] == [2, 4, 6]
    # an epoch logged twice (a run resumed from an earlier checkpoint) keeps its latest row
    resumed.log_epoch({"epoch": 6, "train_loss": 0.125})
    assert resumed.epoch_losses()[-1] == (6, pytest.approx(0.125))


def test_a_new_run_in_a_used_folder_starts_its_history_anew(tmp_path):
    fake_run(tmp_path, epochs=range(6))  # an earlier run that reached epoch 6
    again = fake_run(tmp_path, epochs=range(4), logger=RunLogger(str(tmp_path), tensorboard=False, keep_history=False))
    assert [e for e, _ in again.epoch_losses()] == [1, 2, 3, 4]
    assert [e for e, _ in again.eval_points("voc07_map")] == [2, 4]
    assert [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "epochs.csv"))] == [1, 2, 3, 4]
    assert [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "metrics.csv"))] == [2, 4]


def test_a_resumed_run_finds_where_its_clock_stood(tmp_path):
    logger = RunLogger(str(tmp_path), tensorboard=False)
    logger.log_epoch({"epoch": 1, "train_loss": 1.0, "elapsed_s": 12.5})
    logger.log_eval({"epoch": 2, "voc07_map": 0.5, "elapsed_s": 30.0}, 10)  # an evaluation row only
    resumed = RunLogger(str(tmp_path), tensorboard=False)
    assert resumed.elapsed_after(1) == 12.5 and resumed.elapsed_after(2) == 30.0 and resumed.elapsed_after(3) == 0.0


def _log_losses(logger, steps, value):
    for step in steps:
        logger.log_train(step, step / 5, {"loss": value})
    logger.close()


def test_tensorboard_curves_of_a_new_run_and_of_a_resumed_one(tmp_path):
    _log_losses(RunLogger(str(tmp_path)), range(1, 11), 1.0)  # an interrupted run logged steps 1-10
    resumed = RunLogger(str(tmp_path))  # its checkpoint was at step 6: steps 7-10 are trained again
    resumed.resume_at(6)
    _log_losses(resumed, range(7, 13), 2.0)
    assert tensorboard_losses(tmp_path) == [(s, 1.0) for s in range(1, 7)] + [(s, 2.0) for s in range(7, 13)]
    # a new run in the same folder: the earlier run's curves go, as its CSV rows do
    _log_losses(RunLogger(str(tmp_path), keep_history=False), range(1, 4), 3.0)
    assert tensorboard_losses(tmp_path) == [(1, 3.0), (2, 3.0), (3, 3.0)]
