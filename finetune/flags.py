"""Flags as trl and lm_eval spell theirs, on every command: `--name_with_underscores`, the dashed form accepted
too, and booleans as trl's parser takes them (`--flag` alone, or `--flag true|false`)."""

import argparse

from transformers.hf_argparser import string_to_bool


def option(parser: argparse.ArgumentParser | argparse._ActionsContainer, name: str, **kwargs) -> None:
    """`--name`, and `--na-me` for a name with underscores (as trl's parser accepts both)."""
    dashed = name.replace("_", "-")
    parser.add_argument(f"--{name}", *([f"--{dashed}"] if dashed != name else []), **kwargs)


def switch(parser: argparse.ArgumentParser | argparse._ActionsContainer, name: str, help: str) -> None:
    option(parser, name, type=string_to_bool, nargs="?", const=True, default=False, metavar="{true,false}", help=help)


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return number
