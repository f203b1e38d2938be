"""`finetune distill`: the labeling loop in one command. A teacher (base + adapter) labels unlabeled text as the
benchmark would answer it (`finetune predict`), a student trains on those labels plus the gold rows, another
on the gold rows alone, and one `finetune evaluate` report compares teacher, student and gold-only student."""

import copy
import json
from collections import Counter
from dataclasses import replace
from itertools import islice
from pathlib import Path

from peft.utils import SAFETENSORS_WEIGHTS_NAME
from trl import ModelConfig, SFTConfig

from finetune.config import DistillArguments, TaskArguments
from finetune.data import Table, load_task, read_rows
from finetune.evaluate import Evaluation, check_tasks, evaluate
from finetune.model import base_config, load_tokenizer
from finetune.outputs import check_output, written
from finetune.predict import predict
from finetune.report import write_report
from finetune.train import check_lengths, checked_data, train
from lm_eval_tasks.tweet_sentiment.utils import LABELS

TEACHER, STUDENT, GOLD_ONLY = "teacher", "student", "gold-only"
TEACHER_LABELS = "teacher_labels.jsonl"
STUDENT_ROWS = "student_train.jsonl"
SUMMARY = "distill.json"
REPORT = "report"


def gold_rows(task_args: TaskArguments, model_args: ModelConfig, max_length: int | None) -> list[dict]:
    """The gold rows both students learn from: the user's --train_file, else the task's pinned train split;
    checked as a training run checks them (a row too long named in its own file), before the teacher's work."""
    tables = checked_data(task_args, model_args, max_length)
    docs = tables["train"].rows if "train" in tables else load_task(task_args.task).training_docs()
    return list(islice(docs, task_args.train_limit))


def teacher_config(distill_args: DistillArguments, model_args: ModelConfig) -> ModelConfig:
    """The teacher's own base (at main), or the student's at the student's revision."""
    own = distill_args.teacher_model is not None
    base = distill_args.teacher_model if own else model_args.model_name_or_path
    revision = "main" if own else model_args.model_revision
    return base_config(base, distill_args.teacher_dtype, distill_args.teacher_load_in_4bit, revision)


def claim_outputs(distill_args: DistillArguments, task_args: TaskArguments, out: Path) -> None:
    """Every result's place is checked before the teacher labels anything, so that a refused run changes
    nothing: a used one is replaced only with --overwrite. --resume continues a stopped run where it is."""
    if task_args.resume:
        return
    names = [STUDENT_ROWS, STUDENT, SUMMARY, REPORT]
    names += [] if distill_args.teacher_labels else [TEACHER_LABELS]
    names += [] if distill_args.gold_only_adapter else [GOLD_ONLY]
    for name in names:
        check_output(out / name, task_args.overwrite)


def label_unlabeled(
    distill_args: DistillArguments, task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig, out: Path
) -> Path:
    """The teacher's `finetune predict` output for the unlabeled file: the one given, the one a stopped run
    wrote (with --resume), or a new one."""
    if distill_args.teacher_labels:
        return Path(distill_args.teacher_labels)
    dest = out / TEACHER_LABELS
    if task_args.resume and dest.is_file():
        return dest
    predict(
        teacher_config(distill_args, model_args),
        distill_args.teacher_adapter,
        Path(distill_args.unlabeled_file),
        dest,
        batch_size=sft.per_device_eval_batch_size,
        text_column=task_args.text_column,
        skip_bad_rows=task_args.skip_bad_rows,
        overwrite=task_args.overwrite,
    )
    return dest


def write_student_rows(gold: list[dict], labeled: Table, task_args: TaskArguments, dest: Path) -> None:
    """Gold rows, then the teacher's kept rows, under the user's column names: a file `--train_file` reads. The
    teacher's ids are written `teacher:ID`, since the unlabeled file numbers its rows apart from the gold file and
    the student's file may not repeat an id."""

    def row(doc: dict, source: str) -> dict:
        ident = doc.get("id")
        key = {} if ident in (None, "") else {"id": ident if source == "gold" else f"{source}:{ident}"}
        return {
            **key,
            task_args.text_column: doc["text"],
            task_args.label_column: LABELS[doc["label"]],
            "source": source,
        }

    rows = [row(doc, "gold") for doc in gold] + [row(doc, TEACHER) for doc in labeled.rows]
    with written(dest, overwrite=True, folder=False) as staging:  # its place was claimed before labeling
        staging.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def train_as(name: str, task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig, out: Path) -> str:
    """One training run of the config into `out/name`. With --resume, a run that finished before the stop is
    kept, one that saved a checkpoint continues, and one that had not started starts."""
    folder = out / name
    if task_args.resume and (folder / SAFETENSORS_WEIGHTS_NAME).is_file():
        return str(folder)
    run = copy.deepcopy(sft)
    run.output_dir = str(folder)
    resume = task_args.resume and any(folder.glob("checkpoint-*"))
    return str(train(replace(task_args, resume=resume), run, copy.deepcopy(model_args)))


def compare(distill_args: DistillArguments, model_args: ModelConfig, students: dict[str, str]) -> Evaluation:
    """Every model on the benchmark, each base loaded once: the teacher's base is scored apart if it differs."""
    student_base = base_config(
        model_args.model_name_or_path, "float32", model_args.load_in_4bit, model_args.model_revision
    )
    teacher_base = teacher_config(distill_args, model_args)
    teacher = {TEACHER: distill_args.teacher_adapter}
    tasks, limit = tuple(distill_args.eval_tasks), distill_args.report_limit
    same_base = all(
        getattr(teacher_base, key) == getattr(student_base, key)
        for key in ("model_name_or_path", "model_revision", "load_in_4bit")
    )
    if same_base:
        return evaluate(student_base, {**teacher, **students}, tasks, limit)
    evaluation = evaluate(student_base, students, tasks, limit)
    apart = evaluate(teacher_base, teacher, tasks, limit)
    evaluation.adapters.update(teacher)
    evaluation.results[TEACHER], evaluation.pairs[TEACHER] = apart.results[TEACHER], apart.pairs[TEACHER]
    return evaluation


def distill(distill_args: DistillArguments, task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig) -> str:
    """Label, train the student (and the gold-only student unless given), compare; returns the report's text."""
    check_tasks(distill_args.eval_tasks)
    out = Path(sft.output_dir)
    claim_outputs(distill_args, task_args, out)
    out.mkdir(parents=True, exist_ok=True)
    gold_args = replace(task_args, min_confidence=None)  # the threshold is for the teacher's labels only
    gold = gold_rows(gold_args, model_args, sft.max_length)
    labels = label_unlabeled(distill_args, task_args, sft, model_args, out)
    labeled = read_rows(
        labels,
        text_column=task_args.text_column,
        label_column="prediction",
        min_confidence=task_args.min_confidence,
        skip_bad_rows=task_args.skip_bad_rows,
    )
    check_lengths({TEACHER: labeled}, task_args, load_tokenizer(model_args), sft.max_length)
    write_student_rows(gold, labeled, task_args, out / STUDENT_ROWS)
    student_args = replace(task_args, train_file=str(out / STUDENT_ROWS), min_confidence=None, train_limit=None)
    students = {STUDENT: train_as(STUDENT, student_args, sft, model_args, out)}
    students[GOLD_ONLY] = distill_args.gold_only_adapter or train_as(GOLD_ONLY, gold_args, sft, model_args, out)
    summary = {
        "gold_rows": len(gold),
        "teacher_labels": str(labels),
        "teacher_rows_kept": len(labeled.rows),
        "teacher_rows_below_min_confidence": labeled.below_min_confidence,
        "min_confidence": task_args.min_confidence,
        "teacher_label_counts": dict(Counter(LABELS[doc["label"]] for doc in labeled.rows)),
        "adapters": {TEACHER: distill_args.teacher_adapter, **students},
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    text = write_report(
        compare(distill_args, model_args, students), out / REPORT, task_args.overwrite or task_args.resume
    )
    return (
        f"{text}\nstudent: {len(gold)} gold + {len(labeled.rows)} teacher-labeled rows "
        f"({labeled.below_min_confidence} below min_confidence); report in {out / REPORT}\n"
    )
