"""`finetune distill`: the labeling loop in one command. A teacher (base + adapter) labels unlabeled text as the
benchmark would answer it (`finetune predict`), a student trains on those labels plus the gold rows, another
on the gold rows alone, and one `finetune evaluate` report compares teacher, student and gold-only student."""

import copy
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from lm_eval.api.task import Task
from peft.utils import SAFETENSORS_WEIGHTS_NAME
from trl import ModelConfig, SFTConfig

from finetune.benchmark import Benchmark, Evaluation, load_benchmark, load_tasks
from finetune.config import DistillArguments, TaskArguments
from finetune.data import Table, read_rows
from finetune.dataset import check_lengths
from finetune.evaluate import evaluate
from finetune.model import base_config
from finetune.outputs import check_output, written
from finetune.predict import predict
from finetune.report import write_report
from finetune.train import compute_dtype, loading_args, prepare, train
from lm_eval_tasks.tweet_sentiment.utils import LABELS

TEACHER, STUDENT, GOLD_ONLY = "teacher", "student", "gold-only"
TEACHER_LABELS = "teacher_labels.jsonl"
STUDENT_ROWS = "student_train.jsonl"
SUMMARY = "distill.json"
REPORT = "report"


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
    benchmark: Benchmark,
    distill_args: DistillArguments,
    task_args: TaskArguments,
    sft: SFTConfig,
    model_args: ModelConfig,
    out: Path,
) -> Path:
    """The teacher's `finetune predict` output for the unlabeled file: the one given, the one a stopped run
    wrote (with --resume), or a new one."""
    if distill_args.teacher_labels:
        return Path(distill_args.teacher_labels)
    dest = out / TEACHER_LABELS
    if task_args.resume and dest.is_file():
        return dest
    predict(
        benchmark.choices,
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


def train_as(
    benchmark: Benchmark, name: str, task_args: TaskArguments, sft: SFTConfig, model_args: ModelConfig, out: Path
) -> str:
    """One training run of the config into `out/name`. With --resume, a run that finished before the stop is
    kept, one that saved a checkpoint continues, and one that had not started starts."""
    folder = out / name
    if task_args.resume and (folder / SAFETENSORS_WEIGHTS_NAME).is_file():
        return str(folder)
    run = copy.deepcopy(sft)
    run.output_dir = str(folder)
    resume = task_args.resume and any(folder.glob("checkpoint-*"))
    return str(train(benchmark, replace(task_args, resume=resume), run, model_args))


def compare(
    tasks: dict[str, Task], distill_args: DistillArguments, model_args: ModelConfig, students: dict[str, str]
) -> Evaluation:
    """Every model on the benchmark, each base loaded once: the teacher's base is scored apart if it differs."""
    student_base = base_config(
        model_args.model_name_or_path, "float32", model_args.load_in_4bit, model_args.model_revision
    )
    teacher_base = teacher_config(distill_args, model_args)
    teacher = {TEACHER: distill_args.teacher_adapter}
    limit = distill_args.report_limit
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
    """Label, train the student (and the gold-only student unless given), compare; returns the report's text. The
    tasks are loaded once, and every check that can refuse the run comes before the teacher labels anything."""
    tasks = load_tasks(distill_args.eval_tasks)
    benchmark = load_benchmark(task_args.task, bool(task_args.train_file), bool(task_args.validation_file))
    out = Path(sft.output_dir)
    claim_outputs(distill_args, task_args, out)
    out.mkdir(parents=True, exist_ok=True)
    gold_args = replace(task_args, min_confidence=None)  # the threshold is for the teacher's labels only
    gold, tokenizer = prepare(benchmark, gold_args, loading_args(model_args, compute_dtype(sft)), sft.max_length)
    labels = label_unlabeled(benchmark, distill_args, task_args, sft, model_args, out)
    labeled = read_rows(
        labels,
        text_column=task_args.text_column,
        label_column="prediction",
        min_confidence=task_args.min_confidence,
        skip_bad_rows=task_args.skip_bad_rows,
    )
    check_lengths(benchmark.task, {TEACHER: labeled}, tokenizer, sft.max_length, task_args.skip_bad_rows)
    write_student_rows(gold.train_docs, labeled, task_args, out / STUDENT_ROWS)
    student_args = replace(task_args, train_file=str(out / STUDENT_ROWS), min_confidence=None, train_limit=None)
    students = {STUDENT: train_as(benchmark, STUDENT, student_args, sft, model_args, out)}
    students[GOLD_ONLY] = distill_args.gold_only_adapter or train_as(
        benchmark, GOLD_ONLY, gold_args, sft, model_args, out
    )
    summary = {
        "gold_rows": len(gold.train_docs),
        "teacher_labels": str(labels),
        "teacher_rows_kept": len(labeled.rows),
        "teacher_rows_below_min_confidence": labeled.below_min_confidence,
        "min_confidence": task_args.min_confidence,
        "teacher_label_counts": dict(Counter(LABELS[doc["label"]] for doc in labeled.rows)),
        "adapters": {TEACHER: distill_args.teacher_adapter, **students},
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    evaluation = compare(tasks, distill_args, model_args, students)
    text = write_report(evaluation, out / REPORT, task_args.overwrite or task_args.resume)
    return (
        f"{text}\nstudent: {len(gold.train_docs)} gold + {len(labeled.rows)} teacher-labeled rows "
        f"({labeled.below_min_confidence} below min_confidence); report in {out / REPORT}\n"
    )
