"""Training configuration: trl's own dataclasses plus ours, read from YAML with CLI overrides by TrlParser,
which rejects keys that no dataclass declares."""

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig, SFTConfig, TrlParser

from finetune import FinetuneError
from finetune.data import TRAIN_TASK

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TaskArguments:
    task: str = field(
        default=TRAIN_TASK, metadata={"help": "lm-eval task whose docs and prompt make the training text"}
    )
    train_limit: int | None = field(default=None, metadata={"help": "use only the first N training rows"})
    eval_limit: int | None = field(default=None, metadata={"help": "use only the first N validation rows"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})


TRAIN_DATACLASSES = (TaskArguments, SFTConfig, ModelConfig)


def config_file(name: str) -> Path:
    """A shipped preset by name (`embedded-cpu-quick`) or a path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    preset = CONFIGS_DIR / f"{name}.yaml"
    if preset.exists():
        return preset
    known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
    raise FinetuneError(f"no config file {name!r} and no preset of that name (presets: {known})")


def make_parser(subparsers: argparse._SubParsersAction | None = None) -> TrlParser:
    """trl's script pattern: the same parser stands alone or as the `train` command of the CLI."""
    if subparsers is None:
        return TrlParser(TRAIN_DATACLASSES, prog="finetune train")
    return subparsers.add_parser(
        "train",
        dataclass_types=TRAIN_DATACLASSES,
        help="train a LoRA / QLoRA adapter: finetune train CONFIG.yaml|PRESET [--key value ...]",
        epilog="Several GPUs of one host: --num-processes N [--accelerate-config ddp|fsdp_qlora|FILE] (accelerate "
        "launch runs N processes; the effective batch is per-device batch x N x accumulation).",
    )


def parse_train_args(argv: list[str], parser: TrlParser | None = None) -> tuple[TaskArguments, SFTConfig, ModelConfig]:
    """`CONFIG [--key value ...]`: the YAML sets the defaults, the flags override them."""
    config = config_file(argv[0]) if argv and not argv[0].startswith("-") else None
    if config is not None:
        argv = ["--config", str(config), *argv[1:]]
    try:
        # as the CLI's `train` subparser, its defaults (the command to run) come back as a fourth namespace
        task_args, sft, model_args, *_ = (parser or make_parser()).parse_args_and_config(argv)
    except ValueError as err:  # what HfArgumentParser and the dataclasses say of unknown keys and bad values
        raise FinetuneError(f"{config or 'finetune train'}: {' '.join(str(err).split())}") from None
    return task_args, sft, model_args
