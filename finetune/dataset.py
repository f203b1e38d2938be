"""A training run's rows, built once before any model loads: the task's pinned splits or the user's files, checked
row by row and by length in the base's tokens, as the prompt-completion sets trl trains and validates on."""

import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import datasets
from lm_eval.api.task import Task
from transformers import PreTrainedTokenizerBase

from finetune.benchmark import Benchmark, prompt_completion
from finetune.config import TaskArguments
from finetune.data import Table, drop_too_long, read_rows

DATA_REPORT = "data_report.json"


@dataclass(frozen=True)
class TrainingData:
    """What the trainer trains and validates on, and the user's files it came from (for `data_report.json`)."""

    train: datasets.Dataset
    validation: datasets.Dataset
    train_docs: list[dict]
    validation_docs: list[dict]  # the labeled rows the benchmark's choice scoring answers at each evaluation
    tables: dict[str, Table]

    def report(self) -> str | None:
        """Each user file's rows read, skipped and used (after train_limit / eval_limit); None without files."""
        if not self.tables:
            return None
        used = {"train": len(self.train), "validation": len(self.validation)}
        report = {split: {**table.report(), "used": used[split]} for split, table in self.tables.items()}
        return json.dumps(report, indent=1)


def user_tables(task_args: TaskArguments) -> dict[str, Table]:
    """The user's train and validation files, checked row by row. --min_confidence filters the training rows only:
    checkpoints chosen on the confident (easy) rows alone would be chosen on another task."""
    files = {"train": task_args.train_file, "validation": task_args.validation_file}
    return {
        split: read_rows(
            Path(path),
            text_column=task_args.text_column,
            label_column=task_args.label_column,
            min_confidence=task_args.min_confidence if split == "train" else None,
            skip_bad_rows=task_args.skip_bad_rows,
        )
        for split, path in files.items()
        if path
    }


def check_lengths(
    task: Task,
    tables: dict[str, Table],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
    skip_bad_rows: bool,
) -> None:
    """Each row's prompt, answer and EOS in tokens against trl's `max_length`, beyond which the answer is cut."""
    if max_length is None:
        return
    for table in tables.values():
        pairs = prompt_completion(task, table.rows)
        ids = tokenizer([p + c for p, c in zip(pairs["prompt"], pairs["completion"])])["input_ids"]
        drop_too_long(table, [len(row) + 1 for row in ids], max_length, skip_bad_rows)


def training_data(
    benchmark: Benchmark,
    tables: dict[str, Table],
    task_args: TaskArguments,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
) -> TrainingData:
    """The rows of one run through the task's own prompt: the user's files where given, else the task's splits;
    a row too long for `max_length` is named in its file (or skipped and counted)."""
    task = benchmark.task
    check_lengths(task, tables, tokenizer, max_length, task_args.skip_bad_rows)
    train = tables["train"].rows if "train" in tables else task.training_docs()
    validation = tables["validation"].rows if "validation" in tables else task.validation_docs()
    train_docs = list(islice(train, task_args.train_limit))
    validation_docs = list(islice(validation, task_args.eval_limit))
    return TrainingData(
        train=prompt_completion(task, train_docs),
        validation=prompt_completion(task, validation_docs),
        train_docs=train_docs,
        validation_docs=validation_docs,
        tables=tables,
    )
