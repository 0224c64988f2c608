#!/usr/bin/env bash
# Second GPU check: monitor overhead and trainer throughput on gpt2-117m after the foreach rewrite.
set -u
OUT=${OUT:-out-gpu}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 150 python3 benchmarks/monitor_overhead.py --preset gpt2-117m --batch 16 --rounds 4 --steps 10 2>&1 | tee "$OUT/overhead.txt"
timeout 90 python3 benchmarks/trainer_throughput.py --preset gpt2-117m --batch 16 --rounds 3 --steps 8 2>&1 | tee "$OUT/throughput.txt"
