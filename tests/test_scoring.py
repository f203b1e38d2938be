"""How answers are read and scored: label extraction, macro-F1 and per-class F1 against hand-computed values."""

import pytest

from lm_eval_tasks.tweet_sentiment.utils import (
    INVALID,
    extract_label,
    f1_negative,
    f1_neutral,
    f1_positive,
    macro_f1,
    process_results_gen,
    process_results_mc,
)


@pytest.mark.parametrize(
    "generation, expected",
    [
        (" positive", 2),
        (" Negative", 0),
        (" NEUTRAL.", 1),
        (" positive!!", 2),
        (" the sentiment is neutral", 1),
        (" neutral, maybe positive", 1),
        (" positively", INVALID),
        (" I cannot tell", INVALID),
        ("", INVALID),
        ("\npositive", INVALID),
    ],
)
def test_extract_label(generation: str, expected: int) -> None:
    assert extract_label(generation) == expected


# gold, answer; -1 is an answer that named no label
PAIRS = [(0, 0), (0, 1), (1, 1), (1, -1), (2, 2), (2, 0)]


def test_per_class_f1_by_hand() -> None:
    # negative: tp 1, fp 1 (gold 2 answered 0), fn 1 -> P 1/2, R 1/2, F1 1/2
    assert f1_negative(PAIRS) == pytest.approx(0.5)
    # neutral: tp 1, fp 1 (gold 0 answered 1), fn 1 (the invalid answer) -> 1/2
    assert f1_neutral(PAIRS) == pytest.approx(0.5)
    # positive: tp 1, fp 0, fn 1 -> P 1, R 1/2, F1 2/3
    assert f1_positive(PAIRS) == pytest.approx(2 / 3)


def test_macro_f1_is_the_mean_of_the_three_classes_and_invalid_is_no_class() -> None:
    assert macro_f1(PAIRS) == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)


def test_generative_results_report_invalid_answers() -> None:
    doc = {"text": "x", "label": 1}
    assert process_results_gen(doc, [" neutral"])["acc"] == 1.0
    scored = process_results_gen(doc, [" no idea"])
    assert scored["acc"] == 0.0 and scored["invalid"] == 1.0 and scored["macro_f1"] == (1, INVALID)


def test_multiple_choice_picks_the_most_likely_label() -> None:
    scored = process_results_mc({"text": "x", "label": 2}, [(-3.0, False), (-2.5, False), (-0.1, True)])
    assert scored["acc"] == 1.0 and scored["invalid"] == 0.0 and scored["macro_f1"] == (2, 2)
