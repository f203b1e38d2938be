"""A development set for choosing among embedded-gpu-trainfull recipes: the 800 pinned validation rows rank recipes
whose test accuracies differ by 0.005 no better than chance (docs/distillation.md, sweeps 4 and 5). This draws N of
the preset's 26,680 training rows (task tweet_sentiment_gen_trainfull) as more validation rows, so that recipes
trained on the other rows can be compared on N + 800 rows that no test row decides.

    python bench/dev_split.py OUT [--size 4000] [--seed 0]   writes OUT/train.jsonl and OUT/dev.jsonl
"""

import argparse
import json
import random
from pathlib import Path

from finetune.data import TRAIN_TASK, load_task

TRAINFULL_TASK = "tweet_sentiment_gen_trainfull"


def write_jsonl(path: Path, docs: list[dict]) -> None:
    path.write_text("".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=4000, help="training rows moved to the development set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train = [dict(doc) for doc in load_task(TRAINFULL_TASK).training_docs()]
    random.Random(args.seed).shuffle(train)
    dev = train[: args.size] + [dict(doc) for doc in load_task(TRAIN_TASK).validation_docs()]
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train[args.size :])
    write_jsonl(args.out / "dev.jsonl", dev)
    print(f"{args.out}: train.jsonl {len(train) - args.size} rows, dev.jsonl {len(dev)} rows "
          f"({args.size} drawn from {TRAINFULL_TASK} with seed {args.seed}, 800 pinned validation rows)")  # fmt: skip


if __name__ == "__main__":
    main()
