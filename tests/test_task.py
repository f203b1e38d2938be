"""The tweet_sentiment task as lm-eval sees it: variants, prompt, choices, targets, pinned data."""

import hashlib
import json
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager

from lm_eval_tasks.tweet_sentiment import utils

TASKS = Path(__file__).resolve().parents[1] / "lm_eval_tasks"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweet_sentiment_extraction"
VARIANTS = ["tweet_sentiment_gen", "tweet_sentiment_mc"]
SEED_PROMPT = (
    "Classify the text into negative, neutral, positive, and return the answer as the corresponding tweet text "
    "sentiment label.\ntext: {text}\nlabel:"
)


@pytest.fixture(scope="module")
def manager() -> TaskManager:
    return TaskManager(include_path=str(TASKS), include_defaults=False)


@pytest.fixture(scope="module")
def tasks(manager: TaskManager) -> dict:
    return manager.load(["tweet_sentiment"])["tasks"]


def test_every_variant_and_group_is_found(manager: TaskManager) -> None:
    expected = {"tweet_sentiment", "tweet_sentiment_full", *VARIANTS, *(f"{v}_full" for v in VARIANTS)}
    assert expected <= set(manager.all_tasks)


def test_the_group_runs_both_variants(tasks: dict) -> None:
    assert sorted(tasks) == VARIANTS


@pytest.mark.parametrize("variant", VARIANTS)
def test_prompt_is_the_seed_articles_byte_for_byte(tasks: dict, variant: str) -> None:
    task = tasks[variant]
    doc = task.test_docs()[0]
    text = task.doc_to_text(doc)
    assert text == SEED_PROMPT.format(text=doc["text"])
    assert text == text.rstrip(), "doc_to_text must not end in whitespace: lm-eval adds the delimiter"
    assert task.config.target_delimiter == " "


def test_generative_target_is_the_label_word(tasks: dict) -> None:
    task = tasks["tweet_sentiment_gen"]
    for doc in list(task.test_docs())[:20]:
        assert task.doc_to_target(doc) == doc["label_text"]
    assert task.config.generation_kwargs["until"] == ["\n"]
    assert task.config.generation_kwargs["do_sample"] is False


def test_multiple_choice_scores_the_three_label_words(tasks: dict) -> None:
    task = tasks["tweet_sentiment_mc"]
    doc = task.test_docs()[5]
    assert task.doc_to_choice(doc) == ["negative", "neutral", "positive"]
    assert task.doc_to_choice(doc)[task.doc_to_target(doc)] == doc["label_text"]
    requests = task.construct_requests(doc, task.doc_to_text(doc), metadata=("tweet_sentiment_mc", 0, 1))
    assert [r.arguments[1] for r in requests] == [" negative", " neutral", " positive"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_build_all_requests_covers_the_300_pinned_rows(tasks: dict, variant: str) -> None:
    task = tasks[variant]
    task.build_all_requests(rank=0, world_size=1)
    per_doc = 3 if variant.endswith("_mc") else 1
    assert len(task.instances) == 300 * per_doc


def test_pinned_files_match_their_sha256() -> None:
    sums = (utils.DATA_DIR / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 3
    for line in sums:
        digest, name = line.split()
        assert hashlib.sha256((utils.DATA_DIR / name).read_bytes()).hexdigest() == digest, name


def test_pinned_split_sizes_are_disjoint_and_stratified() -> None:
    splits = {
        name: [json.loads(line) for line in (utils.DATA_DIR / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "validation", "test")
    }
    assert {k: len(v) for k, v in splits.items()} == {"train": 3200, "validation": 800, "test": 300}
    train_ids, validation_ids = {r["id"] for r in splits["train"]}, {r["id"] for r in splits["validation"]}
    assert not train_ids & validation_ids
    neutral_share = sum(r["label"] == 1 for r in splits["train"]) / 3200
    assert neutral_share == pytest.approx(11118 / 27480, abs=0.002)


@pytest.mark.skipif(not SHARED.exists(), reason="the full data set lives beside the checkout, in ../shared")
def test_make_split_regenerates_the_pinned_files(tmp_path: Path) -> None:
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval_tasks.tweet_sentiment.make_split",
            "--source",
            str(SHARED),
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "SHA256SUMS").read_text() == (utils.DATA_DIR / "SHA256SUMS").read_text()


@pytest.mark.skipif(not SHARED.exists(), reason="the full data set lives beside the checkout, in ../shared")
def test_full_variant_reads_a_local_copy_named_by_the_environment(
    manager: TaskManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(utils.FULL_DATA_ENV, str(SHARED))
    task = manager.load(["tweet_sentiment_mc_full"])["tasks"]["tweet_sentiment_mc_full"]
    assert len(task.test_docs()) == 3534
