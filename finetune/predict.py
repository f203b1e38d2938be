"""`finetune predict`: label unlabeled text with a base or base + adapter, scored exactly as the
benchmark's multiple-choice variant scores (the task builds the requests, lm-eval runs them)."""

import json
import math
from pathlib import Path

from lm_eval.api.task import Task
from lm_eval.models.huggingface import HFLM
from trl import ModelConfig

from finetune.data import load_task, read_rows
from finetune.model import load_model, load_tokenizer

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


def predict(
    model_args: ModelConfig,
    adapter: str | None,
    source: Path,
    dest: Path,
    batch_size: int = 16,
    text_column: str = "text",
) -> int:
    """Label every row of `source` into `dest` (JSON Lines); the model is loaded as `finetune evaluate` loads it."""
    rows = read_rows(source, text_column=text_column).rows
    model = load_model(model_args, {"adapter": adapter} if adapter else None)
    lm = HFLM(pretrained=model, tokenizer=load_tokenizer(model_args), batch_size=batch_size)
    labeled = label_rows(lm, rows)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in labeled)
    return len(labeled)
