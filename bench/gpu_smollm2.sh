#!/usr/bin/env bash
# Train and score the embedded SmolLM2-135M-Instruct on the GPU machine (see ../shared/gpu/README.md for staging).
# Usage: [EVAL_ARGS='--load-in-4bit ...'] bench/gpu_smollm2.sh NAME [--key value overrides of the embedded-gpu preset]
# Writes $OUT/NAME/.
set -euo pipefail
name=$1; shift
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 FINETUNE_CACHE=/tmp/cache
mkdir -p "$OUT/$name"
python3 - <<'PY'
from pathlib import Path
from finetune.model import cache_dir, convert_gguf
dest = cache_dir() / "SmolLM2-135M-Instruct"
if not (dest / "config.json").exists():
    convert_gguf(Path("/tmp/smollm2.gguf"), dest)
PY
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/$name/device.txt"
start=$(date +%s)
python3 -m finetune.cli train embedded-gpu --output_dir "/tmp/runs/$name" "$@" 2>&1 | tr '\r' '\n' | grep -v '%|' | tee "$OUT/$name/train.log"
echo "train_seconds $(( $(date +%s) - start ))" | tee -a "$OUT/$name/train.log"
python3 -m finetune.cli evaluate --base embedded --adapter "/tmp/runs/$name" --batch-size 64 ${EVAL_ARGS:-} --out "$OUT/$name/report" 2>&1 \
  | tr '\r' '\n' | grep -v '%|' | tail -40
