"""The task and its rows: training text derived from the lm-eval task itself, so that it cannot drift from
what is scored, and the user's own files read with errors that name the file and line."""

import csv
import json
from pathlib import Path

import datasets
from lm_eval.api.task import Task
from lm_eval.tasks import TaskManager

import lm_eval_tasks
from finetune import FinetuneError

TASK_GROUP = "tweet_sentiment"
TRAIN_TASK = "tweet_sentiment_gen"


def tasks_path() -> Path:
    """The folder to give lm-eval as `--include_path`, wherever this package is installed."""
    return Path(lm_eval_tasks.__file__).resolve().parent


def task_manager() -> TaskManager:
    return TaskManager(include_path=str(tasks_path()), include_defaults=False)


def load_task(name: str = TRAIN_TASK) -> Task:
    return task_manager().load([name])["tasks"][name]


def first(docs: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return docs if limit is None else docs.select(range(min(limit, len(docs))))


def prompt_completion(task: Task, docs: datasets.Dataset, limit: int | None = None) -> datasets.Dataset:
    """Rows of {prompt, completion}: the task's own `doc_to_text`, then its target delimiter and target.
    trl's SFTTrainer masks the prompt out of the loss and appends EOS to the completion."""
    docs = first(docs, limit)
    rows = [
        {"prompt": task.doc_to_text(doc), "completion": task.config.target_delimiter + task.doc_to_target(doc)}
        for doc in docs
    ]
    return datasets.Dataset.from_list(rows)


def training_sets(
    task: Task, train_limit: int | None = None, eval_limit: int | None = None
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The pinned train and validation splits as prompt-completion data sets."""
    return (
        prompt_completion(task, task.training_docs(), train_limit),
        prompt_completion(task, task.validation_docs(), eval_limit),
    )


class BadInput(FinetuneError):
    """A file that cannot be used as it is; the message names the file and line."""


def read_rows(path: Path) -> list[dict]:
    """Rows with a string `text`, from JSON Lines or CSV; read by hand so that errors name the line."""
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
