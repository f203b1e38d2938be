#!/usr/bin/env bash
# Runs every bad input of docs/errors.md through the real CLI and prints each command with what it printed, as
# Markdown. Usage: [PYTHON=.venv/bin/python] [TWEET_SENTIMENT_DATA_DIR=DIR] bash docs/errors.sh [WORKDIR] > out.md
# (CPU, offline; ~15 min on 2 cores; with the source data folder, its train split's empty text is shown too)
# Library warnings and progress bars are filtered out (NOISE); everything `finetune` itself prints is kept.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK" && cd "$WORK" || exit 1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PY="${PYTHON:-python}"
finetune() { "$PY" -m finetune.cli "$@"; }
NOISE='\[A\s*$|Warning|model kwarg is not of type|warnings.warn|it/s\]|s/it\]|examples/s\]|Custom kwargs|--metadata=|^\s*$|\{.(loss|eval_loss|eval_macro_f1|train_runtime).|already-initialized model'
show() {  # show TITLE COMMAND...: the command as typed, then its filtered output and exit status
  echo "### $1"; shift
  echo; echo '```console'; echo "\$ $*"
  "$@" > out.txt 2>&1; local rc=$?
  grep -v -E "$NOISE" out.txt; echo "[exit $rc]"; echo '```'; echo
}

printf '{"text": "fine"}\n{"text": "broken\n' > malformed.jsonl
printf '{"text": "fine"}\n["a", "list"]\n' > not_object.jsonl
printf '{"id": "1", "text": "fine"}\n{"id": "2"}\n' > no_text.jsonl
printf '{"text": "fine"}\n{"text": null}\n' > null_text.jsonl
printf '{"text": "fine"}\n{"text": ""}\n' > empty_text.jsonl
printf '{"text": "fine"}\n{"text": "   "}\n' > blank_text.jsonl
printf 'id,text\n1,fine\n2,caf\xe9 au lait\n' > latin1.csv
printf '\xef\xbb\xbfid,text\n1,Excel saved me with a byte order mark\n' > bom.csv
: > empty.jsonl
printf 'id,text\n' > header_only.csv
printf 'id,tweet\n1,fine\n' > no_text_column.csv
printf '{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n{"id": "a", "text": "three"}\n' > duplicate_ids.jsonl
"$PY" - <<'PY'
import json
long = "so long " * 6000
rows = [{"id": str(i), "text": t, "label": "neutral"} for i, t in enumerate(["a lovely day", long, "meh"], 1)]
open("long_line.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows))
labeled = [("good morning all", "positive"), ("worst service ever", 0), ("the bus is at 9", "1"),
           ("", "neutral"), ("lovely", "happy"), ("thanks so much", "Positive")]
with open("mine.csv", "w") as f:
    f.write("text,label\n" + "".join(f'"{t}",{l}\n' for t, l in labeled))
PY

echo "## Input files"; echo
show "Malformed JSON" finetune predict --input_file malformed.jsonl --output_file labeled.jsonl
show "A row that is not an object" finetune predict --input_file not_object.jsonl --output_file labeled.jsonl
show "Missing text" finetune predict --input_file no_text.jsonl --output_file labeled.jsonl
show "Null text" finetune predict --input_file null_text.jsonl --output_file labeled.jsonl
show "Empty text" finetune predict --input_file empty_text.jsonl --output_file labeled.jsonl
show "Whitespace-only text" finetune predict --input_file blank_text.jsonl --output_file labeled.jsonl
show "Non-UTF-8 bytes (a Latin-1 CSV)" finetune predict --input_file latin1.csv --output_file labeled.jsonl
show "An empty file" finetune predict --input_file empty.jsonl --output_file labeled.jsonl
show "A header-only CSV" finetune predict --input_file header_only.csv --output_file labeled.jsonl
show "A CSV without the text column" finetune predict --input_file no_text_column.csv --output_file labeled.jsonl
show "Duplicate ids" finetune predict --input_file duplicate_ids.jsonl --output_file labeled.jsonl
show "A byte order mark is read as plain UTF-8" finetune predict --input_file bom.csv --output_file bom_labeled.jsonl
echo '```console'; echo '$ cat bom_labeled.jsonl'; cat bom_labeled.jsonl; echo '```'; echo
show "A very long line: more tokens than the model takes" finetune predict --input_file long_line.jsonl --output_file labeled.jsonl
show "... skipped on request, counted and reported" finetune predict --input_file long_line.jsonl --output_file labeled.jsonl --skip_bad_rows
echo '```console'; echo '$ cat labeled.report.json'; cat labeled.report.json; echo; echo '```'; echo
show "A missing input file" finetune predict --input_file missing.jsonl --output_file missing_labeled.jsonl
ln -sfn loop.jsonl loop.jsonl
show "A link that points at itself (any file the system will not read)" finetune predict --input_file loop.jsonl --output_file loop_labeled.jsonl
show "A CSV whose text column has another name" finetune predict --input_file no_text_column.csv --text_column tweet --output_file tweet_labeled.jsonl
printf '{"text": "a gzip file is read as its text"}\n' | gzip > rows.jsonl.gz
show "A gzip-compressed file" finetune predict --input_file rows.jsonl.gz --output_file gz_labeled.jsonl
head -c 30 rows.jsonl.gz > cut.jsonl.gz
show "A gzip file cut short" finetune predict --input_file cut.jsonl.gz --output_file cut_labeled.jsonl

echo "## Training files"; echo
show "An unknown label (and an empty text) in a training file" finetune train embedded-cpu-quick --train_file mine.csv --output_dir runs/mine
show "... skipped on request: labels as words (any case) or indices" finetune train embedded-cpu-quick --train_file mine.csv --output_dir runs/mine --skip_bad_rows true --max_steps 1 --eval_strategy no --save_strategy no --load_best_model_at_end false
echo '```console'; echo '$ cat runs/mine/data_report.json'; cat runs/mine/data_report.json; echo; echo '```'; echo
show "A row longer than max_length" finetune train embedded-cpu-quick --train_file long_line.jsonl --output_dir runs/long
if [ -f "${TWEET_SENTIMENT_DATA_DIR:-}/train.jsonl" ]; then  # the source split, where the user keeps it
  ln -sfn "$TWEET_SENTIMENT_DATA_DIR" DATA_DIR
  show "The source train split's one empty text (fdb77c3752)" finetune train embedded-cpu-quick --train_file DATA_DIR/train.jsonl --output_dir runs/full
fi

echo "## Commands"; echo
show "No preset or config" finetune train --output_dir runs/x
show "A misspelled preset" finetune train embeded-gpu
show "A misspelled flag (train)" finetune train embedded-cpu-quick --lora_rr 3
show "A misspelled flag (predict)" finetune predict --input_file bom.csv --output_file x.jsonl --batchsize 4
printf 'model_name_or_path: embedded\nlora_rank: 8\n' > typo.yaml
show "A misspelled key in a config file" finetune train typo.yaml
show "A bad value" finetune train embedded-cpu-quick --lora_r eight
show "An unknown task" finetune evaluate --tasks tweet_sentiment_gne
show "A task that cannot be trained on" finetune train embedded-cpu-quick --task tweet_sentiment_mc
touch a-file
show "An output folder that cannot be written" finetune predict --input_file bom.csv --output_file a-file/labeled.jsonl

echo "## Outputs"; echo
show "An existing labeled file" finetune predict --input_file bom.csv --output_file bom_labeled.jsonl
mkdir -p runs/report && echo '{}' > runs/report/metrics.json
show "An existing report" finetune evaluate --output_dir runs/report
show "An existing run folder" finetune train embedded-cpu-quick --output_dir runs/mine
show "Resuming a folder with no checkpoint" finetune train embedded-cpu-quick --output_dir runs/empty --resume true

echo "## One run per output"; echo
echo '```console'
echo '$ finetune train embedded-cpu-quick --output_dir runs/busy --max_steps 100000 &'
"$PY" -m finetune.cli train embedded-cpu-quick --output_dir runs/busy --max_steps 100000 > busy.out 2> busy.err &
BUSY=$!
until "$PY" -c "import sys; from finetune.outputs import holder_file; sys.exit(not holder_file('runs/busy').exists())"; do sleep 0.5; done
echo '$ finetune train embedded-cpu-quick --output_dir runs/busy'
"$PY" -m finetune.cli train embedded-cpu-quick --output_dir runs/busy > out.txt 2>&1; RC=$?
grep -v -E "$NOISE" out.txt; echo "[exit $RC]"
echo '$ kill -9 %1'
kill -9 "$BUSY"; wait "$BUSY" 2> /dev/null
echo '```'; echo
show "... after kill -9, the next run takes over" finetune train embedded-cpu-quick --output_dir runs/busy --max_steps 1 --eval_strategy no --save_strategy no --load_best_model_at_end false

echo "## Interruption"; echo
echo '```console'
echo '$ finetune train embedded-cpu-quick --output_dir runs/sig --max_steps 6 &   # then, after its first log line: kill -TERM %1'
"$PY" -m finetune.cli train embedded-cpu-quick --output_dir runs/sig --max_steps 6 > sig.out 2> sig.err &
PID=$!
until grep -q "'loss'" sig.out 2>/dev/null; do sleep 0.2; done
kill -TERM "$PID"; wait "$PID"; RC=$?
grep -v -E "$NOISE" sig.err | tail -n 1; echo "[exit $RC]"
echo '$ ls runs/sig'; ls runs/sig
echo '```'; echo
RESUME=$(grep -o 'resume with: .*' sig.err | sed 's/resume with: //')
show "... and the command it names" $RESUME
echo '```console'; echo '$ ls runs/sig'; ls runs/sig; echo '```'; echo

echo "## Models"; echo
show "A base path that does not exist" finetune predict --model_name_or_path ./models/nope --input_file bom.csv --output_file m.jsonl
GGUF=$("$PY" -c "from finetune.model import embedded_gguf; print(embedded_gguf())")
show "A GGUF file" finetune predict --model_name_or_path "$GGUF" --input_file bom.csv --output_file m.jsonl
mkdir -p config-only && cp "$(finetune model-path)/config.json" config-only/
show "A folder without weights" finetune predict --model_name_or_path config-only --input_file bom.csv --output_file m.jsonl
"$PY" - <<'PY'
from pathlib import Path
from transformers import LlamaConfig
# Llama-3.1-405B's shapes, with an empty weights file: only the config is read
LlamaConfig(hidden_size=16384, intermediate_size=53248, num_hidden_layers=126, num_attention_heads=128,
            num_key_value_heads=8, vocab_size=128256).save_pretrained("llama-405b-shapes")
Path("llama-405b-shapes/model.safetensors").write_bytes(b"")
PY
show "A model too big for the device" finetune predict --model_name_or_path llama-405b-shapes --dtype bfloat16 --input_file bom.csv --output_file m.jsonl
show "An adapter path that does not exist" finetune evaluate --adapter runs/nope --output_dir runs/r1
cp -r "$(finetune model-path)" other-model
show "An adapter for another base" finetune evaluate --model_name_or_path other-model --adapter runs/sig --output_dir runs/r2
