"""`finetune predict`: label unlabeled text with a base or base + adapter, scored exactly as the
benchmark's multiple-choice variant scores (the task builds the requests, lm-eval runs them); under
`accelerate launch`, each process labels its share of the rows."""

import json
import math
from pathlib import Path

from accelerate.utils import gather_object
from lm_eval.api.task import Task
from lm_eval.models.huggingface import HFLM
from trl import ModelConfig

from finetune import FinetuneError
from finetune.data import drop_too_long, load_task, read_rows
from finetune.launch import process_state
from finetune.model import load_model, load_tokenizer
from finetune.outputs import check_output, written
from lm_eval_tasks.tweet_sentiment.utils import macro_f1

PREDICT_TASK = "tweet_sentiment_mc"


def choice_logliks(lm: HFLM, task: Task, rows: list[dict], disable_tqdm: bool = False) -> list[list[float]]:
    """Per row, the log-likelihood of each label after the prompt: the requests the multiple-choice variant
    sends, so an answer here is the benchmark's answer."""
    requests = [
        request
        for i, row in enumerate(rows)
        for request in task.construct_requests(row, task.doc_to_text(row), metadata=(task.config.task, i, 1))
    ]
    logliks = [loglik for loglik, _ in lm.loglikelihood(requests, disable_tqdm=disable_tqdm)]
    per_row = len(logliks) // len(rows) if rows else 0
    return [logliks[i * per_row : (i + 1) * per_row] for i in range(len(rows))]


def choice_macro_f1(lm: HFLM, task: Task, docs: list[dict], disable_tqdm: bool = False) -> float:
    """Macro-F1 of labeled rows answered as the multiple-choice variant answers them: how `finetune train` scores
    its checkpoints on the validation rows."""
    logliks = choice_logliks(lm, task, docs, disable_tqdm)
    return macro_f1([(doc["label"], row.index(max(row))) for doc, row in zip(docs, logliks, strict=True)])


def label_rows(lm: HFLM, rows: list[dict]) -> list[dict]:
    """Each row plus `prediction` (a label word) and `confidence` (its softmax share over the labels)."""
    task = load_task(PREDICT_TASK)
    labels = task.doc_to_choice(rows[0]) if rows else []
    labeled = []
    for row, scores in zip(rows, choice_logliks(lm, task, rows), strict=True):
        top = max(scores)
        total = sum(math.exp(s - top) for s in scores)
        labeled.append({**row, "prediction": labels[scores.index(top)], "confidence": round(1 / total, 4)})
    return labeled


def scored_lengths(lm: HFLM, rows: list[dict]) -> list[int]:
    """Tokens of each row's prompt and its longest label, as lm-eval scores them."""
    task = load_task(PREDICT_TASK)
    longest = max(len(lm.tok_encode(" " + label)) for label in task.doc_to_choice({}))
    return [len(lm.tok_encode(task.doc_to_text(row))) + longest for row in rows]


def report_path(dest: Path) -> Path:
    """Beside the labeled file: how many rows were read and which were skipped, with their lines."""
    return dest.with_suffix(".report.json")


def predict(
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
    """Label every usable row of `source` into `dest` (JSON Lines), with a report beside it; the model is loaded
    as `finetune evaluate` loads it, and only after the input and the output have been checked. Several processes
    label consecutive shares, gathered in rank order (the file's order); the first writes."""
    if dest.suffix.lower() != ".jsonl":  # it is JSON Lines, which `finetune train --train_file` reads by suffix
        raise FinetuneError(f"{dest}: the labels are JSON Lines; name a .jsonl file")
    for path in (dest, report_path(dest)):
        check_output(path, overwrite, folder=False)
    table = read_rows(source, text_column=text_column, skip_bad_rows=skip_bad_rows)
    model = load_model(model_args, {"adapter": adapter} if adapter else None, allow_other_base)
    lm = HFLM(pretrained=model, tokenizer=load_tokenizer(model_args), batch_size=batch_size)
    drop_too_long(table, scored_lengths(lm, table.rows), lm.max_length, skip_bad_rows)
    state = process_state()
    with state.split_between_processes(table.rows) as share:
        labeled = gather_object(label_rows(lm, share))
    if state.is_main_process:
        with written(dest, overwrite, folder=False) as staging:
            with staging.open("w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in labeled)
        with written(report_path(dest), overwrite, folder=False) as staging:
            staging.write_text(json.dumps({**table.report(), "output": str(dest)}, indent=1))
    return len(labeled)
