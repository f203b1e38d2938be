"""The benchmark as the fine-tuner uses it: the lm-eval tasks, loaded once a run and passed along; the training
text derived from them; the choice scoring that validation, predict and soup share; the evaluation's result type.
Every other module reaches the task through what this one returns, never by looking its name up again."""

import functools
import math
import shlex
from dataclasses import dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

import datasets
from datasets.exceptions import DatasetGenerationError
from lm_eval.api.task import Task
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import lm_eval_tasks
from finetune import FinetuneError, first_line
from lm_eval_tasks.tweet_sentiment.utils import LABELS, macro_f1

TASK_GROUP = "tweet_sentiment"
TRAIN_TASK = "tweet_sentiment_gen"
CHOICE_TASK = "tweet_sentiment_mc"  # its requests answer a row as the benchmark's multiple-choice variant does
BASE_NAME = "base"  # the base model's row in every comparison, scored with its adapters switched off
# Answers have collapsed when one label takes at least this share of a model's answers; the gold labels are 28-40%
# each, and a classifier that is right 80% of the time gives none of them more than ~50%.
COLLAPSE_SHARE = 0.9
METRIC_NAMES = ("acc", "macro_f1", *(f"f1_{label}" for label in LABELS), "invalid")


class TaskError(FinetuneError):
    """A task that cannot be used as asked: unknown, of the wrong kind, or its data out of reach."""


def tasks_path() -> Path:
    """The folder to give lm-eval as `--include_path`, wherever this package is installed."""
    return Path(lm_eval_tasks.__file__).resolve().parent


def task_manager() -> TaskManager:
    return TaskManager(include_path=str(tasks_path()), include_defaults=False)


def load_tasks(names: list[str], manager: TaskManager | None = None) -> dict[str, Task]:
    """The tasks (a group's members too) with their data, by variant name: an unknown name, a data folder without
    the file, a data set out of reach or a task named twice is one line, before any model loads."""
    manager = manager or task_manager()
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        raise TaskError(f"unknown task {', '.join(unknown)} (tasks: {', '.join(manager.all_tasks)})")
    try:
        return manager.load(names)["tasks"]
    except (OSError, ValueError, DatasetGenerationError) as err:
        cause = f" ({first_line(err.__cause__)})" if isinstance(err, DatasetGenerationError) and err.__cause__ else ""
        which = f"{'task' if len(names) == 1 else 'tasks'} {', '.join(names)}"
        raise TaskError(f"{which}: {first_line(err)}{cause}") from None


@dataclass(frozen=True)
class Benchmark:
    """What one training run needs of the benchmark: the variant whose prompt and answer are the training text
    (and whose splits are the rows, unless the user brings files), and the multiple-choice variant whose requests
    score the validation rows as the benchmark would."""

    task: Task
    choices: Task


def load_benchmark(name: str = TRAIN_TASK, own_train: bool = False, own_validation: bool = False) -> Benchmark:
    """The task to train on, judged from its YAML before any data loads, then loaded with the choice task in one
    go. Its target must be the answer's words, as a generative variant's is (a multiple-choice variant's is the
    index of a choice), and the splits it lacks must come from the user's files (`own_train`, `own_validation`)."""
    manager = task_manager()
    if name not in manager.all_subtasks:
        raise TaskError(f"--task {name}: not a task to train on (tasks: {', '.join(manager.all_subtasks)})")
    config = manager.task_index[name].cfg or {}
    if config.get("output_type") != "generate_until":
        kind = config.get("output_type")
        raise TaskError(f"--task {name}: a {kind} task; training takes a generative variant ({TRAIN_TASK})")
    splits = (("train", "training_split", own_train), ("validation", "validation_split", own_validation))
    missing = [f"--{split}_file" for split, key, own in splits if not (config.get(key) or own)]
    if missing:
        raise TaskError(f"--task {name}: a test-only variant; train with {TRAIN_TASK} or give {' and '.join(missing)}")
    tasks = load_tasks(list(dict.fromkeys([name, CHOICE_TASK])), manager)
    return Benchmark(task=tasks[name], choices=tasks[CHOICE_TASK])


def load_choices() -> Task:
    """The choice task alone, for commands that label or score rows without training."""
    return load_tasks([CHOICE_TASK])[CHOICE_TASK]


def prompt_completion(task: Task, docs: list[dict], limit: int | None = None) -> datasets.Dataset:
    """Rows of {prompt, completion}: the task's own `doc_to_text`, then its target delimiter and target.
    trl's SFTTrainer masks the prompt out of the loss and appends EOS to the completion."""
    rows = [
        {"prompt": task.doc_to_text(doc), "completion": task.config.target_delimiter + task.doc_to_target(doc)}
        for doc in islice(docs, limit)
    ]
    return datasets.Dataset.from_list(rows)


def scoring_lm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int) -> HFLM:
    """lm-eval's HFLM over a model instance, which keeps its encodings: the same requests come again (at every
    evaluation of a training run, for every model of a comparison) and lm-eval encodes each anew each time (~0.6 s
    of host time for 800 validation rows; docs/benchmarks.md, "Validation")."""
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    lm.tok_encode = functools.cache(lm.tok_encode)
    return lm


def choice_logliks(lm: HFLM, choices: Task, rows: list[dict], disable_tqdm: bool = False) -> list[list[float]]:
    """Per row, the log-likelihood of each label after the prompt: the requests the multiple-choice variant
    sends, so an answer here is the benchmark's answer."""
    requests = [
        request
        for i, row in enumerate(rows)
        for request in choices.construct_requests(row, choices.doc_to_text(row), metadata=(choices.config.task, i, 1))
    ]
    logliks = [loglik for loglik, _ in lm.loglikelihood(requests, disable_tqdm=disable_tqdm)]
    per_row = len(logliks) // len(rows) if rows else 0
    return [logliks[i * per_row : (i + 1) * per_row] for i in range(len(rows))]


def choice_scores(lm: HFLM, choices: Task, docs: list[dict], disable_tqdm: bool = False) -> dict[str, Any]:
    """Labeled rows answered as the multiple-choice variant answers them (how `finetune train` scores its
    checkpoints): their macro-F1, and the label most answered with its share of the answers, where a collapse
    onto one label shows before the macro-F1 says why."""
    answers = [row.index(max(row)) for row in choice_logliks(lm, choices, docs, disable_tqdm)]
    top = max(range(len(LABELS)), key=answers.count)
    return {
        "macro_f1": macro_f1([(doc["label"], answer) for doc, answer in zip(docs, answers, strict=True)]),
        "top_label": LABELS[top],
        "top_label_share": answers.count(top) / len(answers),
    }


def label_rows(lm: HFLM, choices: Task, rows: list[dict]) -> list[dict]:
    """Each row plus `prediction` (a label word) and `confidence` (its softmax share over the labels)."""
    labels = choices.doc_to_choice(rows[0]) if rows else []
    labeled = []
    for row, scores in zip(rows, choice_logliks(lm, choices, rows), strict=True):
        top = max(scores)
        total = sum(math.exp(s - top) for s in scores)
        labeled.append({**row, "prediction": labels[scores.index(top)], "confidence": round(1 / total, 4)})
    return labeled


def scored_lengths(tokenizer: PreTrainedTokenizerBase, choices: Task, rows: list[dict]) -> list[int]:
    """Tokens of each row's prompt and its longest label, encoded as lm-eval's HFLM encodes them (the tokenizer's
    own special tokens), before any weights load."""
    longest = max(len(tokenizer.encode(" " + label)) for label in choices.doc_to_choice({}))
    return [len(tokenizer.encode(choices.doc_to_text(row))) + longest for row in rows]


@dataclass(frozen=True)
class LmEvalArgs:
    """How lm-eval asks each row, by lm-eval's own names and meaning: `lm_eval --num_fewshot N --apply_chat_template
    [NAME] --fewshot_as_multiturn --system_instruction TEXT --gen_kwargs K=V,...`, passed to `simple_evaluate` as
    they are. Unset, each is lm-eval's default (zero-shot, no chat template, the task's generation settings);
    `fewshot_as_multiturn` unset follows the chat template, as lm-eval's CLI resolves it."""

    num_fewshot: int | None = None
    apply_chat_template: bool | str = False
    fewshot_as_multiturn: bool | None = None
    system_instruction: str | None = None
    gen_kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise FinetuneError(f"--num_fewshot {self.num_fewshot}: not a number of examples")
        if self.fewshot_as_multiturn and not self.apply_chat_template:
            raise FinetuneError("--fewshot_as_multiturn needs --apply_chat_template (as in lm-eval)")
        if self.fewshot_as_multiturn is None and self.apply_chat_template:
            object.__setattr__(self, "fewshot_as_multiturn", True)

    def given(self) -> dict[str, Any]:
        """The settings that differ from lm-eval's defaults: `simple_evaluate`'s keyword arguments, and the record
        in metrics.json. Empty, the call is the one `finetune evaluate` makes without these flags."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) not in (f.default, {})}

    def flags(self) -> str:
        """The settings as flags that `lm_eval` and `finetune evaluate` both read, meaning the same."""
        words = []
        for name, value in self.given().items():
            words.append(f"--{name}")
            if name == "gen_kwargs":  # lm-eval's `key=value,...`, each value as Python writes it (its literal_eval)
                words.append(",".join(f"{key}={item!r}" for key, item in value.items()))
            elif value is not True:
                words.append("false" if value is False else str(value))
        return shlex.join(words)


@dataclass
class Evaluation:
    """Scores per model and variant, and every scored row's (gold, answer) pair in the task's order; the lm-eval
    settings the rows were asked with."""

    base: str
    adapters: dict[str, str]
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    pairs: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)
    lm_eval_args: LmEvalArgs = field(default_factory=LmEvalArgs)


def variant_scores(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """lm-eval's results per variant as {metric: value}; groups (which hold no `acc` of their own) left out."""
    return {
        variant: {m: float(values[f"{m},none"]) for m in METRIC_NAMES}
        for variant, values in results.items()
        if variant != TASK_GROUP and "acc,none" in values
    }
