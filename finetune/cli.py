"""The `finetune` command: a thin layer of arguments over the modules that do the work."""

import argparse
import shlex
import sys
from pathlib import Path

from lm_eval._cli.utils import MergeDictAction
from transformers.hf_argparser import string_to_bool
from trl import ModelConfig, TrlParser

from finetune import FinetuneError, os_error
from finetune.config import DTYPES, unknown_flags
from finetune.flags import option, positive_int, switch
from finetune.launch import (
    SPREAD_COMMANDS,
    add_launch_args,
    is_main_process,
    launch_flags,
    relaunch,
    split_launch_args,
    wants_launch,
)
from finetune.outputs import one_run

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
    from finetune.benchmark import load_benchmark
    from finetune.config import parse_train_args
    from finetune.train import train

    task_args, sft, model_args = parse_train_args(rest, args.parser)
    benchmark = load_benchmark(task_args.task, bool(task_args.train_file), bool(task_args.validation_file))
    with one_run(Path(sft.output_dir)):
        out = train(benchmark, task_args, sft, model_args, resume_command(rest, launch_flags(args.launch)))
    if is_main_process():
        print(out)


def _distill(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.config import parse_train_args
    from finetune.distill import distill

    distill_args, task_args, sft, model_args = parse_train_args(rest, args.parser)
    with one_run(Path(sft.output_dir)):
        print(distill(distill_args, task_args, sft, model_args))


def _sweep(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.config import parse_train_args
    from finetune.sweep import sweep

    _, sft, _ = parse_train_args(rest)
    with one_run(Path(sft.output_dir)):
        print(sweep(rest, args.n_trials, args.search_space, args.dev_size, args.n_startup_trials))


def _evaluate(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.benchmark import LmEvalArgs, load_tasks
    from finetune.evaluate import LmEvalFiles, evaluate
    from finetune.outputs import check_output
    from finetune.report import write_report

    if args.log_samples and args.output_path is None:
        raise FinetuneError("--log_samples needs --output_path (as in lm-eval)")
    lm_eval_args = LmEvalArgs(
        num_fewshot=args.num_fewshot,
        apply_chat_template=args.apply_chat_template,
        fewshot_as_multiturn=args.fewshot_as_multiturn,
        system_instruction=args.system_instruction,
        gen_kwargs=args.gen_kwargs,
    )
    files = LmEvalFiles(args.output_path, args.log_samples) if args.output_path is not None else None
    with one_run(args.output_dir):
        check_output(args.output_dir, args.overwrite)
        if files is not None and is_main_process():
            files.output_path.mkdir(parents=True, exist_ok=True)  # lm-eval only logs a folder it cannot write
        evaluation = evaluate(
            _base(args),
            args.adapter,
            tasks=load_tasks(args.tasks),
            limit=args.limit,
            batch_size=args.batch_size,
            allow_other_base=args.allow_other_base,
            lm_eval_args=lm_eval_args,
            files=files,
        )
        if evaluation is not None:  # the first process holds every row
            print(write_report(evaluation, args.output_dir, args.overwrite))
            print(f"report in {args.output_dir}")
            if files is not None:
                folders = ", ".join(str(files.folder(name)) for name in evaluation.results)
                print(f"lm-eval's results{' and samples' if files.log_samples else ''} in {folders}")


def _merge(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.model import merge

    with one_run(args.output_dir):
        print(merge(_base(args), args.adapter, args.output_dir, args.overwrite, args.allow_other_base))


def _predict(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.benchmark import load_choices
    from finetune.predict import predict, report_path

    with one_run(args.output_file):
        count = predict(
            load_choices(),
            _base(args),
            args.adapter,
            args.input_file,
            args.output_file,
            args.batch_size,
            skip_bad_rows=args.skip_bad_rows,
            text_column=args.text_column,
            overwrite=args.overwrite,
            allow_other_base=args.allow_other_base,
        )
    if is_main_process():
        print(f"labeled {count} rows into {args.output_file} (rows read and skipped: {report_path(args.output_file)})")


def _soup(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.benchmark import load_benchmark
    from finetune.soup import SOUP, soup

    benchmark = load_benchmark()
    docs = list(benchmark.task.validation_docs())
    with one_run(args.output_dir):
        scores = soup(
            benchmark.choices, docs, _base(args), args.adapter, args.output_dir, args.batch_size, args.overwrite
        )
    for name, f1 in scores.items():
        print(f"validation macro-F1 {f1:.4f}  {f'soup -> {args.output_dir}' if name == SOUP else name}")


def _push(args: argparse.Namespace, rest: list[str]) -> None:
    from huggingface_hub import HfApi

    from finetune.hub import push

    url = push(
        HfApi(),
        args.adapter,
        args.repo_id,
        report=args.report_dir,
        private=args.private,
        merged=args.merged,
        revision=args.revision,
    )
    print(url)


def _demo(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.demo import demo

    with one_run(args.output_dir):
        text = demo(args.output_dir, rest, args.limit)
    if text is not None:
        print(text)


def _model_path(args: argparse.Namespace, rest: list[str]) -> None:
    from finetune.model import resolve_model

    print(resolve_model(args.name))


def _tasks_path(args: argparse.Namespace, rest: list[str]) -> None:
    """Prints the value for `--include_path "$(finetune tasks-path)"`: empty once linked, with a note to a person at a
    terminal only (a command substitution takes the bare value, so the documented command stays quiet)."""
    from finetune.benchmark import tasks_path
    from finetune.task_link import include_path, link_tasks, unlink_tasks

    if args.link:
        print(f"linked: {link_tasks()} (undo with `finetune tasks-path --unlink`)")
    elif args.unlink:
        removed = unlink_tasks()
        print(f"removed: {removed}" if removed else "nothing to remove: the task is not linked into lm-eval")
    else:
        path = include_path()
        print(path)
        if not path and sys.stdout.isatty():
            print(
                f"(nothing to include: the task is linked into lm-eval; its files are in {tasks_path()})",
                file=sys.stderr,
            )


def _base(args: argparse.Namespace) -> ModelConfig:
    """The base as the model flags describe it, in trl's ModelConfig (what every loader takes)."""
    from finetune.model import base_config

    return base_config(args.model_name_or_path, args.dtype, getattr(args, "load_in_4bit", False), args.model_revision)


def _model_flags(p: argparse.ArgumentParser, default_dtype: str = "float32", quantize: bool = True) -> None:
    """The base's flags, named as trl's ModelConfig names them for `finetune train`."""
    option(p, "model_name_or_path", default="embedded", help="the base: Hub id, folder, or `embedded`")
    option(p, "model_revision", default="main", help="the base's branch, tag or commit on the Hub")
    option(p, "dtype", choices=DTYPES, default=default_dtype)
    if quantize:
        switch(p, "load_in_4bit", help="load the base in nf4 as the QLoRA preset trains it (a GPU)")


def _output_flags(p: argparse.ArgumentParser, allow_other_base: bool = True) -> None:
    if allow_other_base:
        switch(p, "allow_other_base", help="accept adapters trained on a base of another name")
    switch(p, "overwrite", help="replace what is already at the output path")


def chat_template(value: str) -> bool | str:
    """lm-eval's `--apply_chat_template [NAME]`; `true` / `false` as every boolean of this CLI (not template names)."""
    return string_to_bool(value) if value.lower() in ("true", "false") else value


def _lm_eval_flags(p: argparse.ArgumentParser) -> None:
    """lm_eval's own flags for how rows are asked and where its files go, with its names and meaning."""
    group = p.add_argument_group("lm-eval's flags (as `lm_eval` takes them)")
    option(group, "num_fewshot", type=int, metavar="N", help="examples before each row, from the task's training rows")
    chat = "ask through the tokenizer's chat template (NAME: one of several it holds)"
    option(
        group,
        "apply_chat_template",
        type=chat_template,
        nargs="?",
        const=True,
        default=False,
        metavar="NAME",
        help=chat,
    )
    turns = "the examples as turns of the chat (default: on with --apply_chat_template)"
    option(
        group, "fewshot_as_multiturn", type=string_to_bool, nargs="?", const=True, metavar="{true,false}", help=turns
    )
    option(group, "system_instruction", metavar="TEXT", help="a system message (or text) before the prompt")
    generation = "generation settings over the task's (generative variants): `temperature=0,max_gen_toks=8`"
    option(group, "gen_kwargs", nargs="+", action=MergeDictAction, metavar="KEY=VALUE", help=generation)
    switch(group, "log_samples", help="write lm-eval's per-row samples files too (needs --output_path)")
    option(group, "output_path", type=Path, metavar="PATH", help="lm-eval's results (and samples) files, in PATH/MODEL")


def build_parser() -> TrlParser:
    """Every command is a subparser; `train`'s is trl's parser of the training dataclasses (`finetune train -h`).
    Every flag is spelled as trl and lm_eval spell theirs (underscores; dashes accepted), one name a setting."""
    from finetune.config import make_parser

    parser = Parser(prog="finetune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = make_parser(sub)
    p.set_defaults(run=_train, parser=p)

    p = make_parser(sub, "distill")
    p.set_defaults(run=_distill, parser=p)

    p = sub.add_parser(
        "sweep",
        help="search a config's hyperparameters with Optuna, scored by validation macro-F1 on rows drawn from training",
        usage="finetune sweep PRESET|CONFIG [--n_trials N] [--search_space default|gpu|FILE] [--dev_size N] "
        "[--key value ...]",
        epilog="Any other --key value pairs override the config, as for `finetune train`; its output_dir holds the "
        "study. The same command continues an interrupted sweep; one process, on the devices it sees.",
    )
    option(p, "n_trials", type=positive_int, default=20, help="trials to finish, counting those of an interrupted run")
    option(
        p,
        "search_space",
        default="default",
        help="YAML file of the ranges to search, or a shipped one by name (default; gpu: larger batches)",
    )
    option(p, "dev_size", type=positive_int, help="training rows that score the trials; unset: a tenth, at most 400")
    option(p, "n_startup_trials", type=positive_int, default=5, help="trials that complete before the pruner stops any")
    p.set_defaults(run=_sweep, takes_rest=True)

    p = sub.add_parser("evaluate", help="score a base and adapters on tweet_sentiment through lm-eval")
    _model_flags(p)
    option(p, "adapter", action="append", default=[], help=f"{ADAPTER_HELP}; repeatable")
    option(p, "tasks", nargs="+", default=["tweet_sentiment"], help="task or group names")
    option(p, "limit", type=positive_int, help="score only the first N rows of each variant")
    option(p, "batch_size", type=positive_int, default=16)
    option(p, "output_dir", type=Path, default=Path("runs/report"), help="report folder")
    _lm_eval_flags(p)
    _output_flags(p)
    add_launch_args(p)
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("merge", help="fold an adapter into a standalone 16-bit model")
    _model_flags(p, "bfloat16", quantize=False)
    option(p, "adapter", required=True, help=ADAPTER_HELP)
    option(p, "output_dir", type=Path, required=True)
    _output_flags(p)
    p.set_defaults(run=_merge)

    p = sub.add_parser("predict", help="label unlabeled text (.jsonl or .csv with a text column)")
    _model_flags(p)
    option(p, "adapter", help=ADAPTER_HELP)
    option(p, "input_file", type=Path, required=True, help="texts to label (.jsonl or .csv)")
    option(p, "output_file", type=Path, required=True, help="labeled JSON Lines; a .report.json goes beside it")
    option(p, "text_column", default="text", help="the input's column with the text")
    option(p, "batch_size", type=positive_int, default=16)
    switch(p, "skip_bad_rows", help="leave out unusable rows, counted in the report, instead of stopping")
    _output_flags(p)
    add_launch_args(p)
    p.set_defaults(run=_predict)

    p = sub.add_parser("soup", help="average adapters of one base into one (a uniform soup), scoring each")
    _model_flags(p)
    option(p, "adapter", action="append", required=True, help=f"{ADAPTER_HELP}; two or more")
    option(p, "output_dir", type=Path, required=True, help="the soup's adapter folder")
    option(p, "batch_size", type=positive_int, default=16)
    _output_flags(p, allow_other_base=False)
    p.set_defaults(run=_soup)

    p = sub.add_parser("push", help="publish an adapter and its results to the Hugging Face Hub")
    option(p, "adapter", type=Path, required=True, help="the adapter folder of `finetune train`")
    option(p, "repo_id", required=True, help="OWNER/NAME")
    option(p, "report_dir", type=Path, help="report folder of `finetune evaluate` (metrics.json)")
    switch(p, "private", help="make a new repo private")
    switch(p, "merged", help="publish the merged 16-bit model instead of the adapter")
    option(p, "revision", help="branch to commit to")
    p.set_defaults(run=_push)

    p = sub.add_parser(
        "demo",
        help="train the quick preset on the embedded model and show before -> after (CPU)",
        epilog="Any other --key value pairs override the embedded-cpu-quick preset, as for `finetune train`.",
    )
    option(p, "output_dir", type=Path, default=Path("runs/demo"))
    option(p, "limit", type=positive_int, help="score only the first N rows (a quick look)")
    add_launch_args(p)
    p.set_defaults(run=_demo, takes_rest=True)

    p = sub.add_parser("model-path", help="print the local folder of a model name (`embedded` is converted once)")
    p.add_argument("name", nargs="?", default="embedded")
    p.set_defaults(run=_model_path)

    p = sub.add_parser("tasks-path", help="print what to pass to `lm_eval --include_path` (nothing once linked)")
    how = p.add_mutually_exclusive_group()
    switch(how, "link", help="let plain `lm_eval --tasks tweet_sentiment` find the task (reversible)")
    switch(how, "unlink", help="undo --link")
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
        parser.error(f"--num_processes and --accelerate_config are for {', '.join(SPREAD_COMMANDS)}")
    if args.command not in SPREAD_COMMANDS and not is_main_process():
        return  # merge, push, ...: one process's job, however many a launcher started
    try:
        if wants_launch(launch):
            relaunch(argv, launch)
        else:
            args.run(args, rest)
    except FinetuneError as err:
        if is_main_process() or err.exit_code < 128:  # stopped by a signal, every process would say the same
            print(f"finetune {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except OSError as err:  # a file or folder the system refused, past the checks that name their own cause
        if err.filename is None:
            raise
        print(f"finetune {args.command}: error: {os_error(err)}", file=sys.stderr)
        raise SystemExit(FinetuneError.exit_code) from None


if __name__ == "__main__":
    main()
