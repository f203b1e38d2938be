"""Regenerate the pinned 3,200 / 800 / 300 split that the default task variants score.

The seed article sampled its split at random and never saved it; this script makes the same sizes
reproducible: stratified by label, fixed seed, train and validation from the source's train split,
test from its test split. Rows with an empty text are left out and counted on stdout.

    python -m lm_eval_tasks.tweet_sentiment.make_split                    # $TWEET_SENTIMENT_DATA_DIR, else the Hub
    python -m lm_eval_tasks.tweet_sentiment.make_split --source DIR       # from a local mteb-layout copy
"""

import argparse
import hashlib
import json
from pathlib import Path

import datasets
from sklearn.model_selection import train_test_split

from lm_eval_tasks.tweet_sentiment.utils import DATA_DIR, SPLIT_FILES, has_text, source_split

SIZES = {"train": 3200, "validation": 800, "test": 300}
SEED = 42


def stratified_sample(rows: datasets.Dataset, sizes: list[int], seed: int) -> list[list[dict]]:
    """Disjoint label-stratified samples of the given sizes, in a fixed order."""
    records = [r for r in rows if has_text(r)]
    dropped = len(rows) - len(records)
    if dropped:
        print(f"left out {dropped} row(s) with an empty text")
    labels = [r["label"] for r in records]
    if len(sizes) == 1:
        picked, _ = train_test_split(records, train_size=sizes[0], stratify=labels, random_state=seed)
        return [picked]
    first, second, _, _ = train_test_split(
        records, labels, train_size=sizes[0], test_size=sizes[1], stratify=labels, random_state=seed
    )
    return [first, second]


def write_jsonl(path: Path, records: list[dict]) -> str:
    """Write the rows in the mteb layout and return the file's sha256."""
    keys = ("id", "text", "label", "label_text")
    lines = [json.dumps({k: r[k] for k in keys}, ensure_ascii=False) + "\n" for r in records]
    data = "".join(lines).encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="folder with the mteb-layout train.jsonl and test.jsonl")
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args()

    pool = source_split("train", args.source)
    train, validation = stratified_sample(pool, [SIZES["train"], SIZES["validation"]], SEED)
    (test,) = stratified_sample(source_split("test", args.source), [SIZES["test"]], SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    sums = []
    for split, records in (("train", train), ("validation", validation), ("test", test)):
        digest = write_jsonl(args.out / SPLIT_FILES[split], records)
        sums.append(f"{digest}  {SPLIT_FILES[split]}\n")
        print(f"{split}: {len(records)} rows, sha256 {digest}")
    (args.out / "SHA256SUMS").write_text("".join(sums))


if __name__ == "__main__":
    main()
