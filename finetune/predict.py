"""`finetune predict`: label unlabeled text with a base or base + adapter, scored exactly as the
benchmark's multiple-choice variant scores (the task builds the requests, lm-eval runs them); under
`accelerate launch`, each process labels its share of the rows."""

import json
from pathlib import Path

from accelerate.utils import gather_object
from lm_eval.api.task import Task
from lm_eval.models.huggingface import HFLM
from trl import ModelConfig

from finetune import FinetuneError
from finetune.benchmark import label_rows, scored_lengths
from finetune.data import drop_too_long, read_rows
from finetune.launch import is_main_process, process_state
from finetune.model import load_model, load_tokenizer
from finetune.outputs import check_output, written


def report_path(dest: Path) -> Path:
    """Beside the labeled file: how many rows were read and which were skipped, with their lines."""
    return dest.with_suffix(".report.json")


def predict(
    choices: Task,
    model_args: ModelConfig,
    adapter: str | None,
    source: Path,
    dest: Path,
    batch_size: int = 16,
    skip_bad_rows: bool = False,
    text_column: str = "text",
    overwrite: bool = False,
    allow_other_base: bool = False,
) -> int:
    """Label every usable row of `source` into `dest` (JSON Lines) as the choice task answers, with a report beside
    it; the model is loaded as `finetune evaluate` loads it, and only after the input and the output have been
    checked. Several processes label consecutive shares, gathered in rank order (the file's order); the first
    writes."""
    if dest.suffix.lower() != ".jsonl":  # it is JSON Lines, which `finetune train --train_file` reads by suffix
        raise FinetuneError(f"{dest}: the labels are JSON Lines; name a .jsonl file")
    for path in (dest, report_path(dest)):
        check_output(path, overwrite, folder=False)
    table = read_rows(source, text_column=text_column, skip_bad_rows=skip_bad_rows)
    model = load_model(model_args, {"adapter": adapter} if adapter else None, allow_other_base)
    lm = HFLM(pretrained=model, tokenizer=load_tokenizer(model_args), batch_size=batch_size)
    drop_too_long(table, scored_lengths(lm, choices, table.rows), lm.max_length, skip_bad_rows)
    state = process_state()
    with state.split_between_processes(table.rows) as share:
        labeled = gather_object(label_rows(lm, choices, share))
    if is_main_process():
        with written(dest, overwrite, folder=False) as staging:
            with staging.open("w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in labeled)
        with written(report_path(dest), overwrite, folder=False) as staging:
            staging.write_text(json.dumps({**table.report(), "output": str(dest)}, indent=1))
    return len(labeled)
