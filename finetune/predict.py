"""`finetune predict`: label unlabeled text with a base or base + adapter, scored exactly as the
benchmark's multiple-choice variant scores (the task builds the requests, lm-eval runs them); under
`accelerate launch`, each process labels its share of the rows."""

import json
import math
from pathlib import Path

from accelerate.utils import gather_object
from lm_eval.models.huggingface import HFLM
from trl import ModelConfig

from finetune.data import load_task, read_rows
from finetune.launch import process_state
from finetune.model import load_model, load_tokenizer

PREDICT_TASK = "tweet_sentiment_mc"


def label_rows(lm: HFLM, rows: list[dict]) -> list[dict]:
    """Each row plus `prediction` (a label word) and `confidence` (its softmax share over the labels)."""
    task = load_task(PREDICT_TASK)
    requests = [
        request
        for i, row in enumerate(rows)
        for request in task.construct_requests(row, task.doc_to_text(row), metadata=(PREDICT_TASK, i, 1))
    ]
    logliks = [loglik for loglik, _ in lm.loglikelihood(requests)]
    labels = task.doc_to_choice(rows[0]) if rows else []
    labeled = []
    for i, row in enumerate(rows):
        scores = logliks[i * len(labels) : (i + 1) * len(labels)]
        top = max(scores)
        total = sum(math.exp(s - top) for s in scores)
        best = scores.index(top)
        labeled.append({**row, "prediction": labels[best], "confidence": round(1 / total, 4)})
    return labeled


def predict(model_args: ModelConfig, adapter: str | None, source: Path, dest: Path, batch_size: int = 16) -> int:
    """Label every row of `source` into `dest` (JSON Lines); the model is loaded as `finetune evaluate` loads it.
    Several processes label consecutive shares, gathered in rank order (the file's order); the first writes."""
    rows = read_rows(source)
    model = load_model(model_args, {"adapter": adapter} if adapter else None)
    lm = HFLM(pretrained=model, tokenizer=load_tokenizer(model_args), batch_size=batch_size)
    state = process_state()
    with state.split_between_processes(rows) as share:
        labeled = gather_object(label_rows(lm, share))
    if state.is_main_process:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in labeled)
    return len(labeled)
