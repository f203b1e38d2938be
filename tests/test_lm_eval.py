"""End to end through lm-eval itself: its evaluator and its CLI score a model on both variants."""

import json
import os
import subprocess
import sys
from pathlib import Path

from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM

from finetune.data import task_manager, tasks_path

METRICS = ["acc", "macro_f1", "f1_negative", "f1_neutral", "f1_positive", "invalid"]


def test_simple_evaluate_scores_both_variants(tiny_model_dir: Path) -> None:
    lm = HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=8)
    out = simple_evaluate(model=lm, tasks=["tweet_sentiment"], task_manager=task_manager(), limit=12, bootstrap_iters=0)
    for variant in ("tweet_sentiment_gen", "tweet_sentiment_mc"):
        scores = out["results"][variant]
        for metric in METRICS:
            assert 0.0 <= scores[f"{metric},none"] <= 1.0, (variant, metric)
    assert out["results"]["tweet_sentiment_mc"]["invalid,none"] == 0.0


def test_lm_eval_cli_finds_the_task_through_include_path(tiny_model_dir: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "lm_eval",
        "--include_path", str(tasks_path()),
        "--tasks", "tweet_sentiment_mc",
        "--model", "hf",
        "--model_args", f"pretrained={tiny_model_dir}",
        "--device", "cpu",
        "--limit", "6",
        "--output_path", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "macro_f1" in run.stdout
    [result_file] = tmp_path.rglob("results_*.json")
    assert "acc,none" in json.loads(result_file.read_text())["results"]["tweet_sentiment_mc"]
