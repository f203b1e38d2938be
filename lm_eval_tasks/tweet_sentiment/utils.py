"""The tweet_sentiment task's prompt, label set, data and scoring: the one place each of them lives.

lm-eval loads this file through `!function`; the fine-tuner reaches the same functions through the
task objects lm-eval builds, so the text a model is trained on is the text it is scored on.
"""

import os
from pathlib import Path
from typing import Any

import datasets
from sklearn.metrics import f1_score

LABELS = ("negative", "neutral", "positive")
PROMPT = (
    f"Classify the text into {', '.join(LABELS)}, and return the answer as the corresponding "
    "tweet text sentiment label.\ntext: {text}\nlabel:"
)
INVALID = -1

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLIT_FILES = {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}
HUB_DATASET = "mteb/tweet_sentiment_extraction"
HUB_REVISION = "d604517c81ca91fe16a244d1248fc021f9ecee7a"
FULL_DATA_ENV = "TWEET_SENTIMENT_DATA_DIR"


def load_pinned(**_: Any) -> datasets.DatasetDict:
    """The pinned split shipped beside this file; absolute paths, since lm-eval resolves
    relative `data_files` against the working directory."""
    files = {split: str(DATA_DIR / name) for split, name in SPLIT_FILES.items()}
    return datasets.load_dataset("json", data_files=files)


def source_split(split: str, local: str | Path | None = None) -> datasets.Dataset:
    """One split of the source data set: {local}/{split}.jsonl (mteb layout), by default from
    $TWEET_SENTIMENT_DATA_DIR, else the Hub at a pinned revision."""
    local = local or os.environ.get(FULL_DATA_ENV)
    if local:
        return datasets.load_dataset("json", data_files={split: str(Path(local) / f"{split}.jsonl")}, split=split)
    return datasets.load_dataset(HUB_DATASET, revision=HUB_REVISION, split=split)


def load_full(**_: Any) -> datasets.DatasetDict:
    """The whole 3,534-row test split."""
    return datasets.DatasetDict(test=source_split("test"))


def source_train_outside(pinned_splits: tuple[str, ...]) -> datasets.Dataset:
    """The source's train rows that none of the named pinned splits holds, empty texts left out as the
    pinned split leaves them out (matched by `id`)."""
    pinned = load_pinned()
    held = {row_id for split in pinned_splits for row_id in pinned[split]["id"]}
    return source_split("train").filter(lambda row: row["id"] not in held and has_text(row))


def has_text(row: dict) -> bool:
    """The pinned split and the training variants leave out the source's rows with an empty text."""
    return bool((row["text"] or "").strip())


def load_train_full(**_: Any) -> datasets.DatasetDict:
    """For training on every source train row but the pinned validation ones (26,680); validation and test
    are the pinned ones, so checkpoints are chosen and scores read exactly as for the pinned split."""
    pinned = load_pinned()
    return datasets.DatasetDict(
        train=source_train_outside(("validation",)), validation=pinned["validation"], test=pinned["test"]
    )


def doc_to_text(doc: dict) -> str:
    return PROMPT.format(text=doc["text"])


def doc_to_target(doc: dict) -> str:
    return LABELS[doc["label"]]


def doc_to_choice(doc: dict) -> list[str]:
    return list(LABELS)


def extract_label(generation: str) -> int:
    """Index of the first label word in the answer's first line, or INVALID if it names none.

    Case and punctuation are ignored ("Positive.", " NEGATIVE!"), extra words are allowed
    ("the sentiment is neutral"); only whole words count ("positively" is no label)."""
    words = "".join(c if c.isalpha() else " " for c in generation.split("\n", 1)[0].lower()).split()
    return next((LABELS.index(w) for w in words if w in LABELS), INVALID)


def _scores(gold: int, pred: int) -> dict[str, Any]:
    pair = (gold, pred)
    return {
        "acc": float(gold == pred),
        "macro_f1": pair,
        **{f"f1_{label}": pair for label in LABELS},
        "invalid": float(pred == INVALID),
    }


def process_results_gen(doc: dict, results: list[str]) -> dict[str, Any]:
    pred = extract_label(results[0])
    return _scores(doc["label"], pred)


def process_results_mc(doc: dict, results: list[tuple[float, bool]]) -> dict[str, Any]:
    logliks = [loglik for loglik, _ in results]
    return _scores(doc["label"], logliks.index(max(logliks)))


def _f1(items: list[tuple[int, int]], labels: list[int]) -> float:
    """Mean F1 over `labels`; an invalid answer is a miss for its gold class, never a class."""
    golds, preds = zip(*items)
    return float(f1_score(golds, preds, labels=labels, average="macro", zero_division=0.0))


def macro_f1(items: list[tuple[int, int]]) -> float:
    return _f1(items, labels=list(range(len(LABELS))))


def f1_negative(items: list[tuple[int, int]]) -> float:
    return _f1(items, labels=[LABELS.index("negative")])


def f1_neutral(items: list[tuple[int, int]]) -> float:
    return _f1(items, labels=[LABELS.index("neutral")])


def f1_positive(items: list[tuple[int, int]]) -> float:
    return _f1(items, labels=[LABELS.index("positive")])


def acc(references: list[str], predictions: list[str], **_: Any) -> float:
    """Accuracy of one generated answer, under the name `acc`: how lm-eval 0.5 is told that the generative
    variant's `acc` (computed by `process_results_gen`) is its own metric, not the registered log-likelihood one."""
    return float(extract_label(predictions[0]) == LABELS.index(references[0]))
