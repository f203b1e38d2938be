"""`finetune predict`: label unlabeled text with a base or base + adapter, scored exactly as the
benchmark's multiple-choice variant scores (the task builds the requests, lm-eval runs them); under
`accelerate launch`, each process labels its share of the rows."""

import json
from pathlib import Path

from accelerate.utils import gather_object
from lm_eval.api.task import Task
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import resolve_max_length
from transformers import AutoConfig, PreTrainedTokenizerBase
from trl import ModelConfig

from finetune import FinetuneError
from finetune.benchmark import label_rows, scored_lengths
from finetune.data import drop_too_long, read_rows
from finetune.launch import is_main_process, process_state
from finetune.model import check_base, load_model, load_tokenizer, resolve_model
from finetune.outputs import check_output, written


def context_length(model_args: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> int:
    """The most tokens lm-eval's HFLM gives the model, read as it reads them (its config, then its tokenizer), from
    the config alone: a row too long is refused before the weights load."""
    config = AutoConfig.from_pretrained(
        resolve_model(model_args.model_name_or_path), revision=model_args.model_revision
    )
    return resolve_max_length(config, tokenizer, default=HFLM._DEFAULT_MAX_LENGTH)


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
    check_base(model_args)
    tokenizer = load_tokenizer(model_args)
    drop_too_long(
        table, scored_lengths(tokenizer, choices, table.rows), context_length(model_args, tokenizer), skip_bad_rows
    )
    model = load_model(model_args, {"adapter": adapter} if adapter else None, allow_other_base)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
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
