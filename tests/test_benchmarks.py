"""Smoke runs of the speed benchmarks (train step, input pipeline, GPU) at tiny sizes on CPU."""

import importlib
import os
import sys

import pytest
import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture
def bench():
    sys.path.insert(0, BENCH)
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(BENCH)


def test_bench_gpu_fails_cleanly_without_cuda(bench, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as err:
        bench("bench_gpu").main([])
    assert err.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_bench_gpu_cpu_smoke_runs_amp_and_ddp_paths(bench, tmp_path):
    out = tmp_path / "gpu.json"
    rows = bench("bench_gpu").main(
        [
            "--device",
            "cpu",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--log-interval",
            "1",
            "--model",
            "ssd_tiny_synthetic",
            "--size",
            "32",  # float16 convolutions are slow on CPU: the smallest input the model takes
            "--batches",
            "2",
            "--amp",
            "fp16",
            "--ddp",
            "--json",
            str(out),
            "--profile",
            str(tmp_path / "profile.txt"),
        ]
    )
    assert [(r["amp"], r["ddp"]) for r in rows] == [("fp16", False), ("fp16", True)]
    assert "aten::convolution" in (tmp_path / "profile.txt").read_text()
    assert all(r["images_per_s"] > 0 and torch.isfinite(torch.tensor(r["last_loss"])) for r in rows)
    assert all(r["grad_scale"] > 0 for r in rows)
    assert out.exists() and not torch.distributed.is_initialized()


def test_bench_train_step_tiny(bench, capsys):
    result = bench("bench_train_step").main(
        ["--models", "tiny", "--dtypes", "fp32", "--batch", "2", "--repeats", "1", "--no-torchvision"]
    )
    job = result["jobs"]["ssdkit tiny fp32"]
    assert job["gflop"] > 0 and job["images_per_s"] > 0 and result["peak_gflops"] > 0
    assert "of peak" in capsys.readouterr().out


def test_onednn_kernels_times_each_layouts_kernels(bench, capsys):
    result = bench("onednn_kernels").main(["--model", "tiny", "--batch", "2", "--top", "3"])
    assert set(result) == {"nhwc", "nchw"}
    for layout in result.values():
        assert layout["total_ms"] > 0 and len(layout["top"]) == 3
        assert all(key[0] in ("convolution", "reorder", "pooling", "batch_normalization") for key, _ in layout["top"])
    assert "oneDNN primitives" in capsys.readouterr().out


def test_bench_pipeline_ssdkit_side(bench):
    result = bench("bench_pipeline").main(
        ["--images", "4", "--batch", "2", "--workers", "0", "--repeats", "1", "--no-gluoncv", "--device", "cpu"]
    )
    assert result[0]["ssdkit"] > 0 and "GluonCV" not in result[0]


def test_class_agnostic_pass_of_the_postprocess_variants(bench):
    """The variant's extra pass: a box of another class on the same object goes (at IoU above the threshold), a
    separate object stays, rows stay score-ordered with -1 padding."""
    post = bench("eval_postprocess_variants").with_class_agnostic_pass
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 30, 30], [-1, -1, -1, -1]]])
    ids, scores = torch.tensor([[[0.0], [1], [1], [-1]]]), torch.tensor([[[0.9], [0.8], [0.7], [-1]]])
    for iou, kept in ((0.9, [0, 2]), (0.99, [0, 1, 2])):
        out_ids, out_scores, out_boxes = post(lambda *a: (ids, scores, boxes), iou)(None, None, None)
        n = len(kept)
        assert out_ids[0, :n, 0].tolist() == ids[0, kept, 0].tolist() and (out_ids[0, n:] == -1).all()
        assert out_scores[0, :n, 0].tolist() == scores[0, kept, 0].tolist()
        assert torch.equal(out_boxes[0, :n], boxes[0, kept]) and (out_boxes[0, n:] == -1).all()


def test_postprocess_variants_scores_a_checkpoint_on_a_larger_split_of_another_seed(
    bench, tiny_run_procs2, tmp_path, monkeypatch
):
    """``--variants base --seed S --val-size N``: the checkpoint as trained (one score), on N images of seed S's
    validation split; an unknown variant is an error."""
    variants = bench("eval_postprocess_variants")
    splits = []
    build = variants.build_datasets

    def recording(cfg, *args, **kwargs):
        out = build(cfg, *args, **kwargs)
        splits.append((cfg.seed, len(out[1])))
        return out

    monkeypatch.setattr(variants, "build_datasets", recording)
    ckpt = str(tiny_run_procs2 / "last.pt")
    log = tmp_path / "scores.txt"
    variants.main(["--seed", "5", "--val-size", "12", "--variants", "base", ckpt, "--log", str(log)])
    lines = log.read_text().strip().splitlines()
    assert "seed 5, 12 images" in lines[1] and lines[2].startswith("checkpoint | base   (")
    assert splits == [(5, 12)] and len(lines) == 4 and 0 <= float(lines[3].split("|")[1]) <= 1
    with pytest.raises(SystemExit):
        variants.main(["--variants", "base,nms0.3", ckpt])


def test_bench_eval_shared_times_both_ways_and_checks_they_agree(bench, tiny_run_procs2):
    times = bench("bench_eval_shared").main(["--checkpoint", str(tiny_run_procs2 / "last.pt"), "--rounds", "1"])
    assert [len(t) for t in times.values()] == [1, 1] and all(t[0] > 0 for t in times.values())


def test_bench_default_breakdown_splits_each_kind_of_epoch(bench):
    threads = torch.get_num_threads()
    try:
        results = bench("bench_default_breakdown").main(["--batches", "2", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    assert list(results) == ["dense (epoch 1)", "sparse (epoch 16)"]
    for r in results.values():
        assert 0 < r["convolutions"] < r["step"] and r["render"] > 0 and r["loader"] > 0
        assert r["threads"] == 1  # one process's share of the default run, whatever build_run gives it
