"""`finetune distill`: a teacher labels unlabeled text, a student trains on gold + teacher labels, and one report
compares teacher, student and the student trained on gold alone."""

import csv
import json
import statistics
from pathlib import Path

import pytest

from finetune.cli import main
from finetune.data import load_task

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
    docs = list(load_task("tweet_sentiment_mc").test_docs())[:UNLABELED]
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
    gold = list(load_task().training_docs())[:GOLD]
    assert [(r["id"], r["label"]) for r in rows if r["source"] == "gold"] == [(d["id"], d["label_text"]) for d in gold]
    assert [(r["id"], r["label"]) for r in rows if r["source"] == "teacher"] == [
        (r["id"], r["prediction"]) for r in labels
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
    docs = list(load_task().training_docs())[:GOLD]
    with gold.open("w", newline="") as f:
        csv.writer(f).writerows([("id", "text", "label"), *((d["id"], d["text"], d["label_text"]) for d in docs)])
    out = tmp_path / "run"
    distill(tiny_model_dir, tiny_adapter_dir, unlabeled_file, out, "--train_file", str(gold),
            "--teacher_labels", str(labels), "--gold_only_adapter", str(distilled / "gold-only"),
            "--min_confidence", str(threshold))  # fmt: skip
    kept = [r["id"] for r in jsonl(labels) if r["confidence"] >= threshold]
    assert 0 < len(kept) < UNLABELED
    rows = jsonl(out / "student_train.jsonl")
    assert [r["id"] for r in rows] == [d["id"] for d in docs] + kept
    assert not (out / "teacher_labels.jsonl").exists() and not (out / "gold-only").exists()
    assert json.loads((out / "report" / "metrics.json").read_text())["adapters"]["gold-only"] == str(
        distilled / "gold-only"
    )
