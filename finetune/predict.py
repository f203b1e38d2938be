"""`finetune predict`: label unlabeled text with a base or base + adapter, scored exactly as the
benchmark's multiple-choice variant scores (the task builds the requests, lm-eval runs them)."""

import csv
import json
import math
from pathlib import Path

import torch
from lm_eval.models.huggingface import HFLM

from finetune.data import load_task
from finetune.model import resolve_model

PREDICT_TASK = "tweet_sentiment_mc"


class BadInput(SystemExit):
    """Input that cannot be labeled; the message names the file and line."""


def read_rows(path: Path) -> list[dict]:
    """Rows with a string `text`, from JSON Lines or CSV; hand-written so that errors name the line."""
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "text" not in (reader.fieldnames or []):
                raise BadInput(f"{path}:1: the CSV header has no `text` column")
            return [dict(row) for row in reader]
    if path.suffix != ".jsonl":
        raise BadInput(f"{path}: expected a .jsonl or .csv file")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise BadInput(f"{path}:{number}: expected an object with a string `text`")
        rows.append(row)
    return rows


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


def predict(model: str, adapter: str | None, source: Path, dest: Path, batch_size: int = 16) -> int:
    rows = read_rows(source)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = HFLM(pretrained=resolve_model(model), peft=adapter, batch_size=batch_size, device=device)
    labeled = label_rows(lm, rows)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in labeled)
    return len(labeled)
