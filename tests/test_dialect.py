"""One command-line dialect: every flag of every `finetune` command is spelled as trl and lm_eval spell theirs
(underscores, the dashed form accepted too), a setting that several commands share has one name on all of them,
and a boolean takes a value or none, as trl's parser reads it."""

import argparse
import shlex

import pytest

from finetune.cli import build_parser, command_parser

PARSER = build_parser()
COMMANDS = sorted(next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices)
# The settings that several commands share, by the one name each has everywhere; the commands that load a base.
BASE_COMMANDS = ("train", "distill", "evaluate", "merge", "predict", "soup")
QUANTIZING_COMMANDS = ("train", "distill", "evaluate", "predict", "soup")
# What the commands called these settings before they spoke one dialect.
RETIRED = ("--base", "--model", "--out", "--input", "--output", "--repo", "--report")


def long_flags(command: str) -> list[list[str]]:
    """Each option's long spellings, in the order given (the first is the one help shows)."""
    actions = command_parser(PARSER, command)._actions
    return [
        [o for o in a.option_strings if o.startswith("--")] for a in actions if a.dest != "help" and a.option_strings
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_is_underscored_and_takes_its_dashed_form_too(command: str) -> None:
    for spellings in long_flags(command):
        first = spellings[0].removeprefix("--")
        assert "-" not in first, f"finetune {command} {spellings[0]}: spelled with dashes"
        if "_" in first:
            assert f"--{first.replace('_', '-')}" in spellings, f"finetune {command} --{first}: no dashed alias"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_shared_setting_has_one_name_on_every_command(command: str) -> None:
    flags = {flag for spellings in long_flags(command) for flag in spellings}
    assert not flags & set(RETIRED), f"finetune {command} still takes {sorted(flags & set(RETIRED))}"
    if command in BASE_COMMANDS:
        assert {"--model_name_or_path", "--model_revision", "--dtype"} <= flags, command
    if command in QUANTIZING_COMMANDS:
        assert "--load_in_4bit" in flags, command


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["evaluate", "--batch_size", "8"], "batch_size", 8),
        (["evaluate", "--batch-size", "8"], "batch_size", 8),
        (["predict", "--input_file", "a.csv", "--output_file", "b.jsonl", "--batch-size", "4"], "batch_size", 4),
        (["evaluate", "--load_in_4bit"], "load_in_4bit", True),
        (["evaluate", "--load-in-4bit", "false"], "load_in_4bit", False),
        (["merge", "--adapter", "a", "--output_dir", "m", "--overwrite", "true"], "overwrite", True),
        (["merge", "--adapter", "a", "--output-dir", "m", "--overwrite"], "overwrite", True),
        (["evaluate", "--model-revision", "v2"], "model_revision", "v2"),
        (["evaluate", "--num_processes", "2"], "num_processes", 2),
        (["demo", "--num-processes", "2"], "num_processes", 2),
    ],
)
def test_both_spellings_and_trl_style_booleans_parse_alike(argv: list[str], dest: str, value: object) -> None:
    args, rest = PARSER.parse_known_args(argv)
    assert (getattr(args, dest), rest) == (value, [])


LM_EVAL_FLAGS = [
    [],
    ["--num_fewshot", "3", "--apply_chat_template"],
    ["--num_fewshot", "0", "--apply_chat_template", "chatml", "--fewshot_as_multiturn", "false"],
    ["--apply_chat_template", "--fewshot_as_multiturn", "--system_instruction", "Answer with one word, please."],
    ["--system_instruction", "Be brief."],
    ["--gen_kwargs", "temperature=0.5,until=['\\n\\n', ',']", "do_sample=True"],
    ["--gen_kwargs", '{"max_gen_toks": 4, "until": ["\\n"]}'],
]


@pytest.mark.parametrize("flags", LM_EVAL_FLAGS, ids=" ".join)
def test_evaluate_reads_lm_evals_flags_as_lm_eval_does_and_writes_them_back_alike(flags: list[str]) -> None:
    """lm-eval's own parser and settings (`EvaluatorConfig`, which resolves `fewshot_as_multiturn`) against
    `finetune evaluate`'s; and the flags the report and the card write read back to the same settings."""
    from lm_eval._cli.harness import HarnessCLI
    from lm_eval.config.evaluate_config import EvaluatorConfig

    from finetune.benchmark import LmEvalArgs

    run = HarnessCLI()._subparsers.choices["run"]
    names = ("num_fewshot", "apply_chat_template", "fewshot_as_multiturn", "system_instruction", "gen_kwargs")

    def theirs(argv: list[str]) -> list:
        config = EvaluatorConfig.from_cli(run.parse_args(["--model", "hf", "--tasks", "tweet_sentiment", *argv]))
        return [getattr(config, name) for name in names]

    def ours(argv: list[str]) -> LmEvalArgs:
        args, rest = PARSER.parse_known_args(["evaluate", *argv])
        assert rest == []
        return LmEvalArgs(**{name: getattr(args, name) for name in names})

    asked = ours(flags)
    assert [*(getattr(asked, name) for name in names[:-1]), asked.gen_kwargs or {}] == theirs(flags)
    written = shlex.split(asked.flags())
    assert ours(written) == asked
    assert theirs(written) == theirs(flags)


def test_fewshot_as_multiturn_without_a_chat_template_is_refused_as_lm_eval_refuses_it() -> None:
    from finetune import FinetuneError
    from finetune.benchmark import LmEvalArgs

    with pytest.raises(FinetuneError, match="--fewshot_as_multiturn needs --apply_chat_template"):
        LmEvalArgs(fewshot_as_multiturn=True)
