#!/usr/bin/env bash
# Every check that needs an NVIDIA GPU, in one run, from the repository root:
#
#     OUT=benchmarks/results/gpu bash benchmarks/gpu_checks.sh
#
# 1. the CUDA tests (they skip on a machine without a GPU): the step never syncs with the host under
#    torch.cuda.set_sync_debug_mode("error"), float32 on the GPU equals the CPU, float16 + GradScaler learns,
#    `ssdkit train/eval --device cuda` end to end;
# 2. bench_gpu.py: SSD300 training img/s at batch 32, 64 and 128 in float16 and bfloat16, a DDP run over NCCL
#    (world size 1) and the operator profile of batch 64 float16;
# 3. the default `ssdkit train` (the built-in synthetic set) on the GPU, timed;
# 4. bench_gpu.py eager, then with torch.compile twice (the second run reads Inductor's cache), at batch 128 and 64
#    in bfloat16 and float16.
# GPU_CHECKS_PARTS picks parts by name (default: "tests bench default compile"). Each part has its own time limit
# so that one that hangs leaves the others' logs.
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
    nproc
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

PARTS=" ${GPU_CHECKS_PARTS:-tests bench default compile} "
part() { case "$PARTS" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

part tests && timeout 240 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_engine_step.py tests/test_cli.py tests/test_engine_config.py \
    -k "cuda or no_host_sync or one_epoch_syncs or procs" 2>&1 | tee "$OUT/tests.txt"

part bench && timeout 180 "$PY" benchmarks/bench_gpu.py --batches 64,32,128 --amp fp16,bf16 --ddp \
    --json "$OUT/gpu.json" --profile "$OUT/profile_b64_fp16.txt" 2>&1 | tee "$OUT/bench_gpu.txt"

if part default; then
    t0=$(date +%s)
    timeout 90 "$PY" -m ssdkit train --device cuda --no-progress --output /tmp/gpu-default-run >"$OUT/default_run.txt" 2>&1
    echo "exit $? after $(($(date +%s) - t0)) s" >>"$OUT/default_run.txt"
    tail -n 25 "$OUT/default_run.txt"
fi

if part compile; then
    timeout 120 "$PY" benchmarks/bench_gpu.py --batches 128,64 --amp bf16,fp16 \
        --json "$OUT/gpu_eager.json" 2>&1 | tee "$OUT/bench_gpu_eager.txt"
    for run in 1 2; do
        timeout 200 "$PY" benchmarks/bench_gpu.py --batches 128,64 --amp bf16,fp16 --compile \
            --json "$OUT/gpu_compiled_$run.json" 2>&1 | tee "$OUT/bench_gpu_compiled_$run.txt"
    done
fi
