"""The `finetune` command: a thin layer of arguments over the modules that do the work."""

import argparse
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _evaluate(args: argparse.Namespace) -> None:
    from finetune.evaluate import evaluate, write_report

    evaluation = evaluate(
        args.base,
        args.adapter,
        tuple(args.tasks),
        args.limit,
        args.batch_size,
        DTYPES[args.dtype],
        args.allow_other_base,
        args.load_in_4bit,
    )
    print(write_report(evaluation, args.out))
    print(f"report in {args.out}")


def _merge(args: argparse.Namespace) -> None:
    from finetune.model import merge

    print(merge(args.base, args.adapter, args.out, DTYPES[args.dtype]))


def _predict(args: argparse.Namespace) -> None:
    from finetune.predict import predict

    count = predict(args.model, args.adapter, args.input, args.output, args.batch_size)
    print(f"labeled {count} rows into {args.output}")


def _push(args: argparse.Namespace) -> None:
    from finetune.hub import push

    print(push(args.adapter, args.repo, args.report, args.private, args.merged, args.revision))


def _demo(args: argparse.Namespace) -> None:
    from finetune.demo import demo

    print(demo(args.out, args.overrides))


def _model_path(args: argparse.Namespace) -> None:
    from finetune.model import resolve_model

    print(resolve_model(args.name))


def _tasks_path(args: argparse.Namespace) -> None:
    from finetune.data import tasks_path

    print(tasks_path())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "train",
        help="train a LoRA / QLoRA adapter: finetune train CONFIG.yaml|PRESET [--key value ...]",
        add_help=False,
    )

    p = sub.add_parser("evaluate", help="score a base and adapters on tweet_sentiment through lm-eval")
    p.add_argument("--base", default="embedded", help="Hub id, folder, or `embedded`")
    p.add_argument("--adapter", action="append", default=[], help="LoRA adapter folder or Hub id; repeatable")
    p.add_argument("--tasks", nargs="+", default=["tweet_sentiment"], help="task or group names")
    p.add_argument("--limit", type=int, help="score only the first N rows of each variant")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument(
        "--load-in-4bit", action="store_true", help="load the base in nf4, as QLoRA trained it (needs a GPU)"
    )
    p.add_argument("--allow-other-base", action="store_true", help="accept adapters trained on a base of another name")
    p.add_argument("--out", type=Path, default=Path("runs/report"), help="report folder")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("merge", help="fold an adapter into a standalone 16-bit model")
    p.add_argument("--base", default="embedded")
    p.add_argument("--adapter", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    p.set_defaults(run=_merge)

    p = sub.add_parser("predict", help="label unlabeled text (.jsonl or .csv with a `text` field)")
    p.add_argument("--model", default="embedded")
    p.add_argument("--adapter")
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(run=_predict)

    p = sub.add_parser("push", help="publish an adapter and its results to the Hugging Face Hub")
    p.add_argument("--adapter", type=Path, required=True)
    p.add_argument("--repo", required=True, help="OWNER/NAME")
    p.add_argument("--report", type=Path, help="report folder of `finetune evaluate` (metrics.json)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--merged", action="store_true", help="publish the merged 16-bit model instead of the adapter")
    p.add_argument("--revision", help="branch to commit to")
    p.set_defaults(run=_push)

    p = sub.add_parser(
        "demo",
        help="train the quick preset on the embedded model and show before -> after (CPU)",
        epilog="Any other --key value pairs override the embedded-cpu-quick preset, as for `finetune train`.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.set_defaults(run=_demo)

    p = sub.add_parser("model-path", help="print the local folder of a model name (`embedded` is converted once)")
    p.add_argument("name", nargs="?", default="embedded")
    p.set_defaults(run=_model_path)

    p = sub.add_parser("tasks-path", help="print the folder to pass to `lm_eval --include_path`")
    p.set_defaults(run=_tasks_path)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from finetune.config import parse_train_args
        from finetune.train import train

        print(train(*parse_train_args(argv[1:])))
        return
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    if overrides and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    args.overrides = overrides
    args.run(args)


if __name__ == "__main__":
    main()
