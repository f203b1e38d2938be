"""The article's whole job, timed part by part, each part the command a user runs (a process of its own, loading
included): `finetune train PRESET` over 3 epochs of the pinned 3,200 rows with its validations, then `finetune
evaluate` of the base and the adapter on the pinned 300 test rows, then on the whole 3,534-row test split. Prints
a table of wall times and scores (and writes whole-job.md / whole-job.json into the output folder).

    python bench/whole_job.py [PRESET] [--model_name_or_path BASE] [--full_data DIR] [--output_dir DIR] [-- FLAGS]

PRESET defaults to `llama-3.1-8b-qlora-h100`. Without the gated weights, time the 8B shape on random weights
(`python bench/train_throughput.py --build-only --model-dir DIR`, then `--model_name_or_path DIR`): the times are
the real model's, the scores mean nothing. DIR of `--full_data` holds the source's `test.jsonl` (mteb layout);
without it the full split comes from `$TWEET_SENTIMENT_DATA_DIR`, else the Hub. FLAGS go to `finetune train`.
"""

import argparse
import json
import os
from pathlib import Path

from benchlib import finetune

from finetune.config import parse_train_args

SPLITS = {"pinned 300": "tweet_sentiment_gen", "full 3,534": "tweet_sentiment_gen_full"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", nargs="?", default="llama-3.1-8b-qlora-h100")
    parser.add_argument("--model_name_or_path", help="the base (default: the preset's)")
    parser.add_argument("--num_train_epochs", default="3", help="the article's 3")
    parser.add_argument("--batch_size", default="16", help="`finetune evaluate`'s (its default)")
    parser.add_argument("--full_data", type=Path, help="folder with the source's test.jsonl")
    parser.add_argument("--output_dir", type=Path, default=Path("runs/whole-job"))
    args, flags = parser.parse_known_args()
    flags = [flag for flag in flags if flag != "--"]
    flags += ["--model_name_or_path", args.model_name_or_path] if args.model_name_or_path else []
    _, _, model_args = parse_train_args([args.preset, *flags])  # the base and its loading, as evaluate needs them
    if args.full_data:
        os.environ["TWEET_SENTIMENT_DATA_DIR"] = str(args.full_data.resolve())
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    adapter, log = out / "adapter", out / "whole-job.log"
    base = [
        "--model_name_or_path",
        model_args.model_name_or_path,
        *(["--load_in_4bit"] if model_args.load_in_4bit else []),
    ]

    parts = [("train", finetune("train", args.preset, *flags, "--num_train_epochs", args.num_train_epochs,
                                "--output_dir", str(adapter), "--overwrite", "true", log=log))]  # fmt: skip
    for split, task in SPLITS.items():
        report = out / f"report-{task}"
        parts.append((f"evaluate base + adapter, {split}", finetune("evaluate", *base, "--adapter", str(adapter),
                      "--tasks", task, "--batch_size", args.batch_size, "--output_dir", str(report), "--overwrite",
                      log=log)))  # fmt: skip
    history = json.loads((adapter / "train_log.json").read_text()) if (adapter / "train_log.json").is_file() else []
    scores = {}
    for task in SPLITS.values():
        metrics = out / f"report-{task}" / "metrics.json"
        if metrics.is_file():
            for model, tasks in json.loads(metrics.read_text())["results"].items():
                scores[f"{model} · {task}"] = tasks[task]
    lines = ["| part | wall s | exit |", "|---|---|---|"]
    lines += [f"| {name} | {run.wall_s:.1f} | {run.code} |" for name, run in parts]
    lines += [f"| whole job | {sum(run.wall_s for _, run in parts):.1f} | |", ""]
    lines += [f"`train_runtime` {row['train_runtime']} s" for row in history if "train_runtime" in row]
    lines += ["", "| model · task | accuracy | macro-F1 | invalid |", "|---|---|---|---|"]
    lines += [f"| {name} | {s['acc']:.3f} | {s['macro_f1']:.3f} | {s['invalid']:.3f} |" for name, s in scores.items()]
    text = "\n".join(lines)
    (out / "whole-job.md").write_text(text + "\n")
    results = {"parts": {name: vars(run) for name, run in parts}, "scores": scores, "log": str(log)}
    (out / "whole-job.json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
