"""The evaluate report says what its table hides: a model whose answers collapsed onto one label, and an adapter
that scores below its base."""

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.benchmark import BASE_NAME, Evaluation
from finetune.cli import main
from finetune.report import table, warnings
from lm_eval_tasks.tweet_sentiment.utils import macro_f1

ROWS = 20


@pytest.fixture(scope="module")
def neutral_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its output head biased toward ` neutral`: every token embedding carries a constant
    feature, which survives to the last hidden state, and the (tied) head row of ` neutral` reads it as a vote."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    [neutral] = tokenizer(" neutral", add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[:, 0] = 1.0
        embeddings[neutral, 0] = 20.0
    folder = tmp_path_factory.mktemp("biased") / "neutral-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_model_that_answers_one_class_is_flagged_in_the_report_and_on_screen(
    neutral_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main(
        [
            "evaluate",
            "--model_name_or_path",
            str(neutral_model_dir),
            "--limit",
            str(ROWS),
            "--output_dir",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    for variant in ("tweet_sentiment_gen", "tweet_sentiment_mc"):
        line = f"base · {variant}: answers collapsed onto `neutral` ({ROWS} of {ROWS}, 100%"
        assert line in printed
        assert line in (tmp_path / "report.md").read_text()
    assert len(json.loads((tmp_path / "metrics.json").read_text())["warnings"]) == 2


def scored(pairs: list[tuple[int, int]]) -> dict[str, dict[str, float]]:
    return {"tweet_sentiment_mc": {"macro_f1": macro_f1(pairs)}}


def test_an_adapter_below_its_base_is_flagged_and_a_sound_one_is_not() -> None:
    gold = [0, 1, 2] * 10
    base = [(g, g) for g in gold[:20]] + [(g, (g + 1) % 3) for g in gold[20:]]  # right on 20 of 30
    worse = [(g, g) for g in gold[:12]] + [(g, (g + 1) % 3) for g in gold[12:]]  # right on 12, answers still spread
    better = [(g, g) for g in gold]
    pairs = {BASE_NAME: base, "worse": worse, "better": better}
    evaluation = Evaluation(
        base="tiny",
        adapters={"worse": "runs/worse", "better": "runs/better"},
        results={name: scored(p) for name, p in pairs.items()},
        pairs={name: {"tweet_sentiment_mc": p} for name, p in pairs.items()},
    )
    assert warnings(evaluation) == [
        f"worse · tweet_sentiment_mc: macro-F1 {macro_f1(worse):.3f} is below the base's {macro_f1(base):.3f}"
    ]


def test_a_label_no_scored_gold_row_has_is_named_once_a_variant() -> None:
    pairs = [(0, 0), (2, 2), (0, 1), (2, 2)]  # no gold `neutral`, as in a --limit run
    evaluation = Evaluation(
        base="tiny",
        adapters={"a": "runs/a"},
        results={name: scored(pairs) for name in (BASE_NAME, "a")},
        pairs={name: {"tweet_sentiment_mc": pairs} for name in (BASE_NAME, "a")},
    )
    assert warnings(evaluation) == [
        "tweet_sentiment_mc: no gold row of `neutral` among the 4 scored; macro-F1 counts its F1 as 0 "
        "(at most 0.67 is reachable)"
    ]
    assert macro_f1(pairs) <= 2 / 3


def test_a_name_with_a_pipe_stays_in_its_own_table_cell() -> None:
    metrics = {"tweet_sentiment_mc": {"acc": 0.5, "macro_f1": 0.4, "invalid": 0.0}}
    lines = table({BASE_NAME: metrics, "lr|2e-4": metrics}).splitlines()
    assert "| lr\\|2e-4 | tweet_sentiment_mc | 0.500 | 0.400 | 0.000 |" in lines
    assert {len(re.split(r"(?<!\\)\|", line)) for line in lines} == {7}, "every row has the header's cells"
