"""The article's whole job, timed part by part, each part the command a user runs (a process of its own, loading
included): `finetune train PRESET` over 3 epochs of the pinned 3,200 rows with its validations, then `finetune
evaluate` of the base and the adapter on the pinned 300 test rows, then on the whole 3,534-row test split. Prints
a table of wall times and scores (and writes whole-job.md / whole-job.json into the output folder).

    python bench/whole_job.py [PRESET] [--model_name_or_path BASE] [--full_data DIR] [--output_dir DIR] [-- FLAGS]

PRESET defaults to `llama-3.1-8b-qlora-h100`. Without the gated weights, time the 8B shape on random weights
(`python bench/train_throughput.py --build-only --model-dir DIR`, then `--model_name_or_path DIR -- --divergence_guard
false`: a random base scores nothing, and the guard stops a run that gets no better than its base): the times are
the real model's, the scores mean nothing. DIR of `--full_data` holds the source's `test.jsonl` (mteb layout);
without it the full split comes from `$TWEET_SENTIMENT_DATA_DIR`, else the Hub. FLAGS go to `finetune train`.
"""

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

from benchlib import run_finetune, scored_as_trained

from finetune.config import parse_train_args

SPLITS = {"pinned 300": "tweet_sentiment_gen", "full 3,534": "tweet_sentiment_gen_full"}


def run_parts(preset: str, flags: list[str], base: list[str], epochs: str, batch_size: str, out: Path) -> dict:
    """Each part as its own `finetune` process, in the order a user runs them."""
    adapter, log = out / "adapter", out / "whole-job.log"
    parts = {"train": run_finetune("train", preset, *flags, "--num_train_epochs", epochs, "--output_dir",
                                   str(adapter), "--overwrite", "true", log=log)}  # fmt: skip
    for split, task in SPLITS.items():
        parts[f"evaluate base + adapter, {split}"] = run_finetune(
            "evaluate", *base, "--adapter", str(adapter), "--tasks", task, "--batch_size", batch_size,
            "--output_dir", str(out / f"report-{task}"), "--overwrite", log=log,
        )  # fmt: skip
    return parts


def scores(out: Path) -> dict[str, dict]:
    """Each model's scores on each split, as the parts' reports hold them."""
    found = {}
    for task in SPLITS.values():
        metrics = out / f"report-{task}" / "metrics.json"
        if metrics.is_file():
            for model, tasks in json.loads(metrics.read_text())["results"].items():
                found[f"{model} · {task}"] = tasks[task]
    return found


def table(parts: dict, scored: dict[str, dict], train_log: Path) -> str:
    history = json.loads(train_log.read_text()) if train_log.is_file() else []
    lines = ["| part | wall s | exit |", "|---|---|---|"]
    lines += [f"| {name} | {run.wall_s:.1f} | {run.code} |" for name, run in parts.items()]
    lines += [f"| whole job | {sum(run.wall_s for run in parts.values()):.1f} | |", ""]
    lines += [f"`train_runtime` {row['train_runtime']} s" for row in history if "train_runtime" in row]
    lines += ["", "| model · task | accuracy | macro-F1 | invalid |", "|---|---|---|---|"]
    lines += [f"| {name} | {s['acc']:.3f} | {s['macro_f1']:.3f} | {s['invalid']:.3f} |" for name, s in scored.items()]
    return "\n".join(lines)


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
    parts = run_parts(args.preset, flags, scored_as_trained(model_args), args.num_train_epochs, args.batch_size, out)
    scored = scores(out)
    text = table(parts, scored, out / "adapter" / "train_log.json")
    (out / "whole-job.md").write_text(text + "\n")
    record = {"parts": {name: asdict(run) for name, run in parts.items()}, "scores": scored}
    (out / "whole-job.json").write_text(json.dumps(record, indent=1))
    print(text)


if __name__ == "__main__":
    main()
