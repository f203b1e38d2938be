#!/usr/bin/env bash
# The seed recipe's training arguments against ours, on a Llama-3.1-8B-shaped model in 4-bit nf4, one GPU.
# Needs the staged wheels (../shared/gpu/README.md) and a tokenizer folder (.gpu/tok: SmolLM2's).
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
bench() { python3 bench/qlora_throughput.py --tokenizer .gpu/tok "$@" 2>&1 | grep -E "RESULT|Error|error" ; }
bench --steps 8 --bf16 true --fp16 false --per_device_train_batch_size 1 --gradient_accumulation_steps 8 \
  --gradient_checkpointing true --optim paged_adamw_32bit
bench --steps 20 --bf16 true --fp16 false --per_device_train_batch_size 32 --gradient_accumulation_steps 1 \
  --gradient_checkpointing false --optim adamw_torch_fused
