"""`finetune distill`: a teacher labels unlabeled text, a student trains on gold + teacher labels, and one report
compares teacher, student and the student trained on gold alone."""

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from finetune.benchmark import TRAIN_TASK, load_tasks
from finetune.cli import main

TINY_CONFIG = Path(__file__).parent / "tiny.yaml"
UNLABELED = 24
GOLD = 32


def distill(model: Path, teacher: Path, unlabeled: Path, out: Path, *more: str) -> None:
    main(["distill", str(TINY_CONFIG), "--model_name_or_path", str(model), "--output_dir", str(out),
          "--teacher_adapter", str(teacher), "--unlabeled_file", str(unlabeled), "--train_limit", str(GOLD),
          "--eval_limit", "8", "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2",
          "--eval_tasks", "tweet_sentiment_mc", "--report_limit", "16", *more])  # fmt: skip


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def unlabeled_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Test rows with their labels withheld: only an id and the text."""
    path = tmp_path_factory.mktemp("unlabeled") / "unlabeled.jsonl"
    docs = list(load_tasks(["tweet_sentiment_mc"])["tweet_sentiment_mc"].test_docs())[:UNLABELED]
    path.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))
    return path


@pytest.fixture(scope="module")
def distilled(tiny_model_dir: Path, tiny_adapter_dir: Path, unlabeled_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("distill") / "run"
    distill(tiny_model_dir, tiny_adapter_dir, unlabeled_file, out)
    return out


def test_the_student_learns_from_the_gold_rows_and_every_teacher_label(distilled: Path) -> None:
    labels = jsonl(distilled / "teacher_labels.jsonl")
    rows = jsonl(distilled / "student_train.jsonl")
    gold = list(load_tasks([TRAIN_TASK])[TRAIN_TASK].training_docs())[:GOLD]
    assert [(r["id"], r["label"]) for r in rows if r["source"] == "gold"] == [(d["id"], d["label_text"]) for d in gold]
    assert [(r["id"], r["label"]) for r in rows if r["source"] == "teacher"] == [
        (f"teacher:{r['id']}", r["prediction"]) for r in labels
    ]
    assert len(labels) == UNLABELED and all("label" not in r for r in labels), "gold labels stay withheld"
    summary = json.loads((distilled / "distill.json").read_text())
    assert (summary["gold_rows"], summary["teacher_rows_kept"]) == (GOLD, UNLABELED)


def test_one_report_compares_teacher_student_and_gold_only_student(distilled: Path) -> None:
    metrics = json.loads((distilled / "report" / "metrics.json").read_text())
    assert list(metrics["results"]) == ["base", "teacher", "student", "gold-only"]
    assert metrics["rows"] == {"tweet_sentiment_mc": 16}
    for name in ("student", "gold-only"):
        assert metrics["adapters"][name] == str(distilled / name)
        assert (distilled / name / "adapter_model.safetensors").is_file()
    assert "| student | tweet_sentiment_mc |" in (distilled / "report" / "report.md").read_text()


def test_a_second_run_reuses_labels_and_gold_only_student_and_filters_by_confidence_but_not_the_gold_file(
    distilled: Path, tiny_model_dir: Path, tiny_adapter_dir: Path, unlabeled_file: Path, tmp_path: Path
) -> None:
    labels = distilled / "teacher_labels.jsonl"
    threshold = statistics.median(r["confidence"] for r in jsonl(labels))
    gold = tmp_path / "gold.csv"  # the user's own gold rows: no `confidence` column, which the threshold must not need
    docs = list(load_tasks([TRAIN_TASK])[TRAIN_TASK].training_docs())[:GOLD]
    ids = [r["id"] for r in jsonl(labels)] + [d["id"] for d in docs[UNLABELED:]]  # numbered as the unlabeled rows
    with gold.open("w", newline="") as f:
        csv.writer(f).writerows(
            [("id", "text", "label"), *((i, d["text"], d["label_text"]) for i, d in zip(ids, docs))]
        )
    out = tmp_path / "run"
    distill(tiny_model_dir, tiny_adapter_dir, unlabeled_file, out, "--train_file", str(gold),
            "--teacher_labels", str(labels), "--gold_only_adapter", str(distilled / "gold-only"),
            "--min_confidence", str(threshold))  # fmt: skip
    kept = [r["id"] for r in jsonl(labels) if r["confidence"] >= threshold]
    assert 0 < len(kept) < UNLABELED
    rows = jsonl(out / "student_train.jsonl")
    assert [r["id"] for r in rows] == ids + [f"teacher:{i}" for i in kept]
    assert not (out / "teacher_labels.jsonl").exists() and not (out / "gold-only").exists()
    assert json.loads((out / "report" / "metrics.json").read_text())["adapters"]["gold-only"] == str(
        distilled / "gold-only"
    )


def test_a_used_output_folder_is_refused_before_the_teacher_labels_anything_and_left_as_it_was(
    distilled: Path, tiny_model_dir: Path, tiny_adapter_dir: Path, unlabeled_file: Path, capsys: pytest.CaptureFixture
) -> None:
    before = {path: path.read_bytes() for path in distilled.glob("*.json*")}
    with pytest.raises(SystemExit):
        distill(tiny_model_dir, tiny_adapter_dir, unlabeled_file, distilled, "--min_confidence", "0.5")
    assert f"{distilled / 'student_train.jsonl'}: the file exists; pass --overwrite" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in distilled.glob("*.json*")} == before


def test_resume_keeps_the_teacher_labels_and_finished_students_and_trains_what_is_missing(
    distilled: Path, tiny_model_dir: Path, tiny_adapter_dir: Path, unlabeled_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"  # a run stopped while the gold-only student trained, before it saved a checkpoint
    shutil.copytree(distilled, out, ignore=shutil.ignore_patterns("gold-only", "report"))
    kept = {
        path: path.stat().st_mtime_ns
        for path in (out / "teacher_labels.jsonl", out / "student" / "adapter_model.safetensors")
    }
    distill(tiny_model_dir, tiny_adapter_dir, unlabeled_file, out, "--resume", "true")
    assert {path: path.stat().st_mtime_ns for path in kept} == kept, "neither labeled nor trained again"
    assert (out / "gold-only" / "adapter_model.safetensors").is_file()
    assert list(json.loads((out / "report" / "metrics.json").read_text())["results"]) == [
        "base",
        "teacher",
        "student",
        "gold-only",
    ]


def test_bad_unlabeled_rows_stop_the_run_with_their_line_or_are_skipped_when_asked(
    tiny_model_dir: Path, tiny_adapter_dir: Path, distilled: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    unlabeled = tmp_path / "unlabeled.jsonl"
    unlabeled.write_text('{"text": "love it"}\n{"text": ""}\n{"text": "hate it"}\n')
    gold_only = ("--gold_only_adapter", str(distilled / "gold-only"))
    with pytest.raises(SystemExit):
        distill(tiny_model_dir, tiny_adapter_dir, unlabeled, tmp_path / "stopped", *gold_only)
    assert f"{unlabeled}:2: `text` is empty" in capsys.readouterr().err
    out = tmp_path / "skipped"
    distill(tiny_model_dir, tiny_adapter_dir, unlabeled, out, *gold_only, "--skip_bad_rows", "true")
    assert [row["text"] for row in jsonl(out / "teacher_labels.jsonl")] == ["love it", "hate it"]


def test_a_gold_row_too_long_to_train_on_is_named_in_its_own_file_before_the_teacher_labels(
    tiny_model_dir: Path, tiny_adapter_dir: Path, unlabeled_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"text": "fine", "label": "positive"}\n' + json.dumps({"text": "word " * 400, "label": 0}) + "\n")
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        distill(tiny_model_dir, tiny_adapter_dir, unlabeled_file, out, "--train_file", str(gold), "--max_length", "64")
    assert f"{gold}:2: " in capsys.readouterr().err
    assert not (out / "teacher_labels.jsonl").exists()


def test_the_teacher_and_the_unlabeled_file_may_come_from_the_config_file(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "distill.yaml"
    absent = tmp_path / "absent.jsonl"
    config.write_text(TINY_CONFIG.read_text() + f"teacher_adapter: {tiny_adapter_dir}\nunlabeled_file: {absent}\n")
    with pytest.raises(SystemExit):
        main(["distill", str(config), "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "o")])
    assert f"{absent}: no such file" in capsys.readouterr().err  # parsed from the file, then read: it got that far


def test_the_teachers_dtype_is_checked_in_the_config_file_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "distill.yaml"
    config.write_text(TINY_CONFIG.read_text() + "teacher_adapter: a\nunlabeled_file: u.jsonl\nteacher_dtype: fp16\n")
    with pytest.raises(SystemExit):
        main(["distill", str(config), "--output_dir", str(tmp_path / "o")])
    assert "teacher_dtype 'fp16' is not one of float32, bfloat16, float16" in capsys.readouterr().err


def test_without_a_teacher_distill_says_what_to_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["distill", str(TINY_CONFIG), "--output_dir", str(tmp_path)])
    assert "set teacher_adapter and unlabeled_file, in the config file or as --flags" in capsys.readouterr().err


def test_an_unknown_report_task_is_refused_before_the_teacher_labels_anything(
    tiny_model_dir: Path, tiny_adapter_dir: Path, unlabeled_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        distill(tiny_model_dir, tiny_adapter_dir, unlabeled_file, tmp_path, "--eval_tasks", "tweet_sentimnet")
    assert "unknown task tweet_sentimnet" in capsys.readouterr().err
    assert not (tmp_path / "teacher_labels.jsonl").exists()


def test_a_student_base_that_does_not_exist_is_one_line_before_the_teacher_labels_anything(
    tiny_adapter_dir: Path, unlabeled_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        distill(tmp_path / "no-base", tiny_adapter_dir, unlabeled_file, tmp_path / "run")
    assert (
        capsys.readouterr().err.splitlines()[-1] == f"finetune distill: error: {tmp_path / 'no-base'}: no such folder"
    )
    assert not (tmp_path / "run" / "teacher_labels.jsonl").exists()
