#!/usr/bin/env bash
# One call on a GPU machine: check every strategy's meta-gradient there in float64,
# then train the full better-omniglot study, JOBS runs at a time, starting none after START_LIMIT
# seconds. Data travels in .gpudata/ (carried, git-ignored): omniglot/ and, to skip preprocessing,
# cache/omniglot/. Everything comes back under $OUT; `tar xzf runs.tgz -C ~/.cache/mamlbook` adopts
# the runs, and `mamlbook study better-omniglot --device cuda --full --trained-only` reports them.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MAMLBOOK_DATA=$PWD/.gpudata MAMLBOOK_CACHE=/tmp/mbcache
mkdir -p "$MAMLBOOK_CACHE" && cp -r .gpudata/cache/. "$MAMLBOOK_CACHE/"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
timeout 90 python3 scripts/device_check.py cuda 2>&1 | tee "$OUT/check.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "strategy check failed: no study"; exit 1; }
timeout "${STUDY_SECONDS:-460}" python3 -m mamlbook study better-omniglot --device cuda --full \
  --jobs "${JOBS:-12}" --time-limit "${START_LIMIT:-300}" --out "$OUT/better-omniglot-cuda.json" 2>&1 | tee "$OUT/study.log"
tar czf "$OUT/runs.tgz" -C "$MAMLBOOK_CACHE" --exclude='*.pt' --exclude='*.png' studies
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader
ls -la "$OUT"
