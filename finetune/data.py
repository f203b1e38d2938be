"""Training and validation text, derived from the lm-eval task itself so that it cannot drift from what is scored."""

from pathlib import Path

import datasets
from lm_eval.api.task import Task
from lm_eval.tasks import TaskManager

import lm_eval_tasks

TASK_GROUP = "tweet_sentiment"
TRAIN_TASK = "tweet_sentiment_gen"


def tasks_path() -> Path:
    """The folder to give lm-eval as `--include_path`, wherever this package is installed."""
    return Path(lm_eval_tasks.__file__).resolve().parent


def task_manager() -> TaskManager:
    return TaskManager(include_path=str(tasks_path()), include_defaults=False)


def load_task(name: str = TRAIN_TASK) -> Task:
    return task_manager().load([name])["tasks"][name]


def prompt_completion(task: Task, docs: datasets.Dataset, limit: int | None = None) -> datasets.Dataset:
    """Rows of {prompt, completion}: the task's own `doc_to_text`, then its target delimiter and target.
    trl's SFTTrainer masks the prompt out of the loss and appends EOS to the completion."""
    if limit is not None:
        docs = docs.select(range(min(limit, len(docs))))
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
