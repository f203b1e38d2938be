"""End to end through lm-eval itself: its scores are the ones a plain forward pass gives, and its CLI
(`lm_eval --model hf --model_args pretrained=...,peft=...`) and `finetune evaluate` answer every row alike."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.benchmark import TASK_GROUP, load_tasks, tasks_path
from finetune.evaluate import evaluate
from finetune.model import base_config
from lm_eval_tasks.tweet_sentiment.utils import extract_label, macro_f1

ROWS = 12


@pytest.fixture(scope="module")
def evaluation(tiny_model_dir: Path, tiny_adapter_dir: Path):
    return evaluate(base_config(str(tiny_model_dir)), [str(tiny_adapter_dir)], load_tasks([TASK_GROUP]), limit=ROWS)


def test_multiple_choice_answers_are_the_most_likely_label_by_a_plain_forward_pass(
    evaluation, tiny_model_dir: Path, tiny_adapter_dir: Path, label_logliks
) -> None:
    docs = list(load_tasks(["tweet_sentiment_mc"])["tweet_sentiment_mc"].test_docs())[:ROWS]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_adapter_dir)
    answers = [row.index(max(row)) for row in label_logliks(model, tokenizer, [d["text"] for d in docs])]
    pairs = evaluation.pairs["tiny-adapter"]["tweet_sentiment_mc"]
    assert pairs == [(d["label"], a) for d, a in zip(docs, answers)]
    scores = evaluation.results["tiny-adapter"]["tweet_sentiment_mc"]
    assert scores["acc"] == sum(g == a for g, a in pairs) / ROWS
    assert scores["macro_f1"] == pytest.approx(macro_f1(pairs))


def test_generative_answers_are_greedy_generations_read_by_the_label_extractor(
    evaluation, tiny_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    task = load_tasks(["tweet_sentiment_gen"])["tweet_sentiment_gen"]
    docs = list(task.test_docs())[:ROWS]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_adapter_dir)
    answers = []
    for doc in docs:
        ids = tokenizer(task.doc_to_text(doc), return_tensors="pt", add_special_tokens=False)["input_ids"]
        out = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        answers.append(extract_label(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)))
    pairs = evaluation.pairs["tiny-adapter"]["tweet_sentiment_gen"]
    assert pairs == [(d["label"], a) for d, a in zip(docs, answers)]
    assert evaluation.results["tiny-adapter"]["tweet_sentiment_gen"]["invalid"] == answers.count(-1) / ROWS


def test_lm_eval_cli_with_peft_answers_every_row_as_finetune_evaluate(
    evaluation, tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    cmd = [
        sys.executable, "-m", "lm_eval",
        "--include_path", str(tasks_path()),
        "--tasks", "tweet_sentiment",
        "--model", "hf",
        "--model_args", f"pretrained={tiny_model_dir},peft={tiny_adapter_dir}",
        "--device", "cpu",
        "--batch_size", "16",
        "--limit", str(ROWS),
        "--log_samples",
        "--output_path", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    for variant in ("tweet_sentiment_gen", "tweet_sentiment_mc"):
        [samples] = tmp_path.rglob(f"samples_{variant}_*.jsonl")
        rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda s: s["doc_id"])
        assert [tuple(s["macro_f1"]) for s in rows] == evaluation.pairs["tiny-adapter"][variant], variant
    [results] = tmp_path.rglob("results_*.json")
    scores = json.loads(results.read_text())["results"]
    assert scores["tweet_sentiment_mc"]["acc,none"] == evaluation.results["tiny-adapter"]["tweet_sentiment_mc"]["acc"]
