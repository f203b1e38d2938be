"""The `finetune` command: a thin layer of arguments over the modules that do the work."""

import argparse
import os
import shlex
import sys
from pathlib import Path

from trl import TrlParser

from finetune import FinetuneError
from finetune.config import DTYPES, unknown_flags
from finetune.launch import (
    SPREAD_COMMANDS,
    add_launch_args,
    launch_flags,
    positive_int,
    relaunch,
    split_launch_args,
    wants_launch,
)

RUN_FLAGS = ("--resume", "--overwrite")
BOOLEANS = ("true", "false", "yes", "no", "1", "0")
ADAPTER_HELP = "LoRA adapter folder, or Hub id[@REVISION] (the adapter's branch, tag or commit, not the base's)"


class Parser(TrlParser):
    """argparse's own errors (a missing or malformed value) in the one-line form of every other error."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def resume_command(rest: list[str], launch: list[str]) -> str:
    """The command that continues this run: the same arguments and launch flags, without --overwrite, with
    --resume true (on fewer processes the effective batch would change, and FSDP's checkpoint would not load)."""
    kept, previous = [], ""
    for arg in rest:
        is_value = previous in RUN_FLAGS and arg.lower() in BOOLEANS
        if arg.split("=")[0] not in RUN_FLAGS and not is_value:
            kept.append(arg)
        previous = arg
    return shlex.join(["finetune", "train", *kept, *launch, "--resume", "true"])


def _train(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.config import parse_train_args
    from finetune.train import train

    task_args, sft, model_args = parse_train_args(rest, args.parser)
    out = train(task_args, sft, model_args, resume_command(rest, launch_flags(args.launch)))
    if _first_process():
        print(out)


def _distill(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.config import parse_train_args
    from finetune.distill import distill

    print(distill(*parse_train_args(rest, args.parser)))


def _evaluate(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.evaluate import evaluate
    from finetune.model import base_config
    from finetune.outputs import check_output
    from finetune.report import write_report

    check_output(args.out, args.overwrite)
    evaluation = evaluate(
        base_config(args.base, args.dtype, args.load_in_4bit, args.revision),
        args.adapter,
        tasks=tuple(args.tasks),
        limit=args.limit,
        batch_size=args.batch_size,
        allow_other_base=args.allow_other_base,
    )
    if evaluation is not None:  # the first process holds every row
        print(write_report(evaluation, args.out, args.overwrite))
        print(f"report in {args.out}")


def _merge(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.model import base_config, merge

    base = base_config(args.base, args.dtype, revision=args.revision)
    print(merge(base, args.adapter, args.out, args.overwrite, args.allow_other_base))


def _predict(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.model import base_config
    from finetune.predict import predict, report_path

    count = predict(
        base_config(args.model, args.dtype, args.load_in_4bit, args.revision),
        args.adapter,
        args.input,
        args.output,
        args.batch_size,
        skip_bad_rows=args.skip_bad_rows,
        overwrite=args.overwrite,
        allow_other_base=args.allow_other_base,
    )
    if _first_process():
        print(f"labeled {count} rows into {args.output} (rows read and skipped: {report_path(args.output)})")


def _push(args: argparse.Namespace, rest: list[str]) -> None:
    from huggingface_hub import HfApi

    from finetune.hub import push

    url = push(
        HfApi(),
        args.adapter,
        args.repo,
        report=args.report,
        private=args.private,
        merged=args.merged,
        revision=args.revision,
    )
    print(url)


def _demo(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.demo import demo

    text = demo(args.out, rest)
    if text is not None:
        print(text)


def _model_path(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.model import resolve_model

    print(resolve_model(args.name))


def _tasks_path(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.data import tasks_path
    from finetune.task_link import link_tasks, unlink_tasks

    if args.link:
        print(f"linked: {link_tasks()} (undo with `finetune tasks-path --unlink`)")
    elif args.unlink:
        removed = unlink_tasks()
        print(f"removed: {removed}" if removed else "nothing to remove: the task is not linked into lm-eval")
    else:
        print(tasks_path())


def _first_process() -> bool:
    """Under `accelerate launch` (torch's launcher sets RANK), the process that speaks and writes for all."""
    return int(os.environ.get("RANK", "0")) == 0


def _model_flags(p: argparse.ArgumentParser, name: str, default_dtype: str = "float32", quantize: bool = True) -> None:
    p.add_argument(f"--{name}", default="embedded", help="Hub id, folder, or `embedded`")
    p.add_argument("--revision", default="main", help="the base's branch, tag or commit on the Hub (model_revision)")
    p.add_argument("--dtype", choices=DTYPES, default=default_dtype)
    if quantize:
        p.add_argument(
            "--load-in-4bit", action="store_true", help="load the base in nf4 as the QLoRA preset trains it (a GPU)"
        )


def _allow_other_base_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-other-base", action="store_true", help="accept adapters trained on a base of another name")


def _overwrite_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace what is already at the output path")


def build_parser() -> TrlParser:
    """Every command is a subparser; `train`'s is trl's parser of the training dataclasses (`finetune train -h`)."""
    from finetune.config import make_parser

    parser = Parser(prog="finetune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = make_parser(sub)
    p.set_defaults(run=_train, parser=p)

    p = make_parser(sub, "distill")
    p.set_defaults(run=_distill, parser=p)

    p = sub.add_parser("evaluate", help="score a base and adapters on tweet_sentiment through lm-eval")
    _model_flags(p, "base")
    p.add_argument("--adapter", action="append", default=[], help=f"{ADAPTER_HELP}; repeatable")
    p.add_argument("--tasks", nargs="+", default=["tweet_sentiment"], help="task or group names")
    p.add_argument("--limit", type=positive_int, help="score only the first N rows of each variant")
    p.add_argument("--batch-size", type=positive_int, default=16)
    _allow_other_base_flag(p)
    p.add_argument("--out", type=Path, default=Path("runs/report"), help="report folder")
    _overwrite_flag(p)
    add_launch_args(p)
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("merge", help="fold an adapter into a standalone 16-bit model")
    _model_flags(p, "base", "bfloat16", quantize=False)
    p.add_argument("--adapter", required=True, help=ADAPTER_HELP)
    p.add_argument("--out", type=Path, required=True)
    _allow_other_base_flag(p)
    _overwrite_flag(p)
    p.set_defaults(run=_merge)

    p = sub.add_parser("predict", help="label unlabeled text (.jsonl or .csv with a `text` field)")
    _model_flags(p, "model")
    p.add_argument("--adapter", help=ADAPTER_HELP)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True, help="labeled JSON Lines; a .report.json goes beside it")
    p.add_argument("--batch-size", type=positive_int, default=16)
    _allow_other_base_flag(p)
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="leave out unusable rows, counted in the report, instead of stopping",
    )
    _overwrite_flag(p)
    add_launch_args(p)
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
    add_launch_args(p)
    p.set_defaults(run=_demo, takes_rest=True)

    p = sub.add_parser("model-path", help="print the local folder of a model name (`embedded` is converted once)")
    p.add_argument("name", nargs="?", default="embedded")
    p.set_defaults(run=_model_path)

    p = sub.add_parser("tasks-path", help="print the folder to pass to `lm_eval --include_path`")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--link", action="store_true", help="let plain `lm_eval --tasks tweet_sentiment` find the task (reversible)"
    )
    how.add_argument("--unlink", action="store_true", help="undo --link")
    p.set_defaults(run=_tasks_path)
    return parser


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def main(argv: list[str] | None = None) -> None:
    """Parse, run (or run again on several processes through accelerate's launcher), and turn the errors a user
    can fix into one line on stderr, without a traceback: exit 2, or 128 + the signal's number for a training
    run stopped by a signal."""
    parser = build_parser()
    try:
        launch, argv = split_launch_args(sys.argv[1:] if argv is None else argv)
    except FinetuneError as err:
        parser.error(str(err))
    args, rest = parser.parse_known_args(argv)
    args.launch = launch
    if args.command in ("train", "distill"):  # trl's parser reads the config file and every flag itself
        rest = argv[argv.index(args.command) + 1 :]
    elif rest and not getattr(args, "takes_rest", False):
        command = command_parser(parser, args.command)
        command.error(f"unrecognized arguments: {unknown_flags(rest, command)}")
    if wants_launch(launch) and args.command not in SPREAD_COMMANDS:
        parser.error(f"--num-processes and --accelerate-config are for {', '.join(SPREAD_COMMANDS)}")
    if args.command not in SPREAD_COMMANDS and not _first_process():
        return  # merge, push, ...: one process's job, however many a launcher started
    try:
        if wants_launch(launch):
            relaunch(argv, launch)
        else:
            args.run(args, rest)
    except FinetuneError as err:
        if _first_process() or err.exit_code < 128:  # stopped by a signal, every process would say the same
            print(f"finetune {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None


if __name__ == "__main__":
    main()
