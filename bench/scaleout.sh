#!/usr/bin/env bash
# The "Scale-out" rows of docs/benchmarks.md, on one host with 2 or 4 GPUs, most important first; each row is written
# as soon as it is measured (OUT/steps.log says what ran when), so a run cut short keeps what it finished.
#   1. 8B-shaped nf4 QLoRA, the same per-device arguments (bench/train_throughput.py's VARIANT) on 1 GPU (a plain
#      process, then under accelerate's launcher, which runs it with one CPU thread as it runs every DDP process),
#      2 and 4 GPUs (DDP, finetune/accelerate/ddp.yaml; on 2 also with DDP's search for unused parameters on), then
#      FSDP + QLoRA on 2 (finetune/accelerate/fsdp_qlora.yaml)
#   2. SmolLM2 `embedded-gpu` trained on 2 GPUs at the preset's effective batch (half the per-device batch), then
#      on 1 GPU, for the macro-F1 of the two adapters
#   3. the evaluation of base + both adapters on every GPU of the host and on 1 GPU: the same answers, and the times
# Usage: bench/scaleout.sh OUT TOKENIZER_DIR MODEL_DIR [VARIANT [STEPS SKIP]]
#   TOKENIZER_DIR: a tokenizer for the 8B shape (SmolLM2's: `finetune model-path embedded`)
#   MODEL_DIR: the 8B-shaped random model, written there if absent (16 GB)
#   STEPS, SKIP: optimizer steps per 8B row, and how many first ones the steady state leaves out (20, 5)
#   PARTS: "8b", "smollm2" or both (the default); ROWS: which 8B rows, in order, repeats allowed
#   (default "1 launcher 2 4 find-unused fsdp"; e.g. "1 2 4 1" measures the lone card before and after DDP)
#   extra: more `finetune train` flags for every 8B row, e.g. "--task tweet_sentiment_gen_trainfull" (26,680 rows,
#   from $TWEET_SENTIMENT_DATA_DIR or the Hub) instead of the pinned 3,200
# (`python3 -m accelerate.commands.launch` is `accelerate launch`, whether or not that script is on the PATH.)
set -uo pipefail
out=$(realpath -m "$1") tok=$2 model=$3 variant=${4:-b64} steps=${5:-20} skip=${6:-5}
cd "$(dirname "$0")/.."
mkdir -p "$out"
step() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$out/steps.log"; }
timed() { local start=$SECONDS; "$@"; local rc=$?; echo "$((SECONDS - start)) s, exit $rc" | tee -a "$out/steps.log"; }
row8b() {  # LABEL LAUNCHER... (what runs bench/scaleout_train.py; $extra: more `finetune train` flags)
  local label=$1 log="$out/train-8b-$((++rows))-${1// /-}.log"; shift
  # shellcheck disable=SC2086  # $extra is a list of flags
  "$@" bench/scaleout_train.py --model-dir "$model" --tokenizer "$tok" --variant "$variant" --steps "$steps" \
    --skip "$skip" --label "$label" --out "$out/train-8b.jsonl" ${extra:-} > "$log" 2>&1
  grep -h RESULT "$log" || tail -5 "$log"
}
rows=0
launch="python3 -m accelerate.commands.launch --main_process_port 0"
ddp=finetune/accelerate/ddp.yaml fsdp=finetune/accelerate/fsdp_qlora.yaml
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"

if [ "${PARTS:-8b smollm2}" != smollm2 ]; then
step "8B shape: random model"
CUDA_VISIBLE_DEVICES=0 timed python3 bench/train_throughput.py --build-only --model-dir "$model" > "$out/build.log" 2>&1
for row in ${ROWS:-1 launcher 2 4 find-unused fsdp}; do
  case $row in
    1) step "8B QLoRA $variant, 1 GPU, a plain process"
       CUDA_VISIBLE_DEVICES=0 timed row8b "1 GPU" python3 ;;
    launcher) step "8B QLoRA $variant, 1 GPU, under accelerate's launcher"
       CUDA_VISIBLE_DEVICES=0 timed row8b "1 GPU launcher" $launch --num_processes 1 --num_machines 1 \
         --mixed_precision no --dynamo_backend no ;;
    2 | 4) step "8B QLoRA $variant, DDP on $row GPUs"
       timed row8b "DDP $row" $launch --config_file $ddp --num_processes "$row" ;;
    find-unused) step "8B QLoRA $variant, DDP on 2 GPUs, searching for unused parameters (transformers' default for a peft model)"
       extra="${extra:-} --ddp_find_unused_parameters true" timed row8b "DDP 2 find-unused" $launch --config_file $ddp --num_processes 2 ;;
    fsdp) step "8B QLoRA $variant, FSDP on 2 GPUs"
       timed row8b "FSDP 2" $launch --config_file $fsdp --num_processes 2 ;;
    *) echo "unknown row: $row" >&2; exit 2 ;;
  esac
done
fi

[ "${PARTS:-8b smollm2}" = 8b ] && { step DONE; exit; }
runs=$out/runs
gpus=$(nvidia-smi -L | wc -l)
per_device=$(sed -n 's/^per_device_train_batch_size: *//p' finetune/configs/embedded-gpu.yaml)
step "SmolLM2 embedded-gpu on 2 GPUs, per-device batch $((per_device / 2)) (effective $per_device)"
CUDA_VISIBLE_DEVICES=0,1 timed python3 -m finetune.cli train embedded-gpu --num_processes 2 \
  --output_dir "$runs/smollm2-2gpu" --per_device_train_batch_size $((per_device / 2)) > "$out/smollm2-2gpu.log" 2>&1
step "SmolLM2 embedded-gpu on 1 GPU"
CUDA_VISIBLE_DEVICES=0 timed python3 -m finetune.cli train embedded-gpu --output_dir "$runs/smollm2-1gpu" \
  > "$out/smollm2-1gpu.log" 2>&1
grep -h "effective batch\|train_runtime" "$out/smollm2-2gpu.log" "$out/smollm2-1gpu.log"
evaluate() {  # NAME [--num_processes N]
  local name=$1; shift
  timed python3 -m finetune.cli evaluate --model_name_or_path embedded --adapter "$runs/smollm2-2gpu" \
    --adapter "$runs/smollm2-1gpu" --batch_size 64 "$@" --output_dir "$out/$name" > "$out/$name.log" 2>&1
  head -8 "$out/$name/report.md"
}
step "evaluate base + both adapters on $gpus processes"
evaluate eval-${gpus}gpu --num_processes "$gpus"
step "evaluate base + both adapters on 1 GPU"
CUDA_VISIBLE_DEVICES=0 evaluate eval-1gpu
python3 - "$out" "$gpus" <<'PY'
import json, sys
from pathlib import Path

out, n = Path(sys.argv[1]), sys.argv[2]
one, many = (json.loads((out / name / "answers.json").read_text()) for name in ("eval-1gpu", f"eval-{n}gpu"))
rows = sum(len(pairs) for per in one.values() for pairs in per.values())
differ = sum(a != b for m in one for v in one[m] for a, b in zip(one[m][v], many[m][v], strict=True))
metrics = [json.loads((out / d / "metrics.json").read_text())["results"] for d in ("eval-1gpu", f"eval-{n}gpu")]
print(f"EVAL {n} processes vs 1 GPU: {differ} of {rows} answers differ; metrics identical: {metrics[0] == metrics[1]}")
PY
step DONE
