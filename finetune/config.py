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
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "your own training rows (.jsonl or .csv) instead of the task's pinned train split; "
            "without --validation_file they are validated on the task's pinned validation split"
        },
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "your own validation rows (.jsonl or .csv), read like --train_file"}
    )
    text_column: str = field(default="text", metadata={"help": "column of --train_file/--validation_file with text"})
    label_column: str = field(
        default="label",
        metadata={
            "help": "column with the label, as the word or its index (`prediction` for `finetune predict` output)"
        },
    )
    min_confidence: float | None = field(
        default=None,
        metadata={"help": "keep only rows whose `confidence` (as `finetune predict` writes it) is at least this"},
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "leave out unusable rows of the files (counted in data_report.json) instead of stopping"},
    )


@dataclass
class DistillArguments:
    """`finetune distill`: a teacher labels unlabeled text, a student learns from it; the student is the model and
    LoRA that the config describes, trained on its gold rows (the pinned split or --train_file) plus the teacher's
    labels (those at or above --min_confidence, which here filters the teacher's labels only)."""

    teacher_adapter: str = field(metadata={"help": "the teacher's LoRA adapter (folder or Hub id)"})
    unlabeled_file: str = field(metadata={"help": "text to label (.jsonl or .csv, column --text_column)"})
    teacher_model: str | None = field(
        default=None, metadata={"help": "the teacher's base model (default: the student's, model_name_or_path)"}
    )
    teacher_dtype: str = field(default="float32", metadata={"help": "the teacher base's dtype while it labels"})
    teacher_load_in_4bit: bool = field(
        default=False, metadata={"help": "load the teacher's base in nf4, as the QLoRA preset trains it (a GPU)"}
    )
    teacher_labels: str | None = field(
        default=None, metadata={"help": "reuse this `finetune predict` output of the teacher instead of labeling again"}
    )
    gold_only_adapter: str | None = field(
        default=None, metadata={"help": "an adapter already trained on the gold rows alone, instead of training one"}
    )
    eval_tasks: list[str] = field(
        default_factory=lambda: ["tweet_sentiment"], metadata={"help": "tasks the report scores every model on"}
    )
    report_limit: int | None = field(
        default=None, metadata={"help": "score only the first N rows of each task in the report (a quick look)"}
    )


TRAIN_DATACLASSES = (TaskArguments, SFTConfig, ModelConfig)
DISTILL_DATACLASSES = (DistillArguments, *TRAIN_DATACLASSES)
HELP = {
    "train": "train a LoRA / QLoRA adapter: finetune train CONFIG.yaml|PRESET [--key value ...]",
    "distill": "a teacher labels text, a student trains on it, one report compares them: "
    "finetune distill STUDENT_CONFIG|PRESET --teacher_adapter A --unlabeled_file F [--key value ...]",
}


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


def make_parser(subparsers: argparse._SubParsersAction | None = None, command: str = "train") -> TrlParser:
    """trl's script pattern: the same parser stands alone or as the `train` (or `distill`) command of the CLI."""
    types = DISTILL_DATACLASSES if command == "distill" else TRAIN_DATACLASSES
    if subparsers is None:
        return TrlParser(types, prog=f"finetune {command}")
    return subparsers.add_parser(command, dataclass_types=types, help=HELP[command])


def parse_train_args(argv: list[str], parser: TrlParser | None = None) -> tuple:
    """`CONFIG [--key value ...]`: the YAML sets the defaults, the flags override them. One instance of each of
    the parser's dataclasses: (TaskArguments, SFTConfig, ModelConfig) for `train`, DistillArguments first for
    `distill`."""
    config = config_file(argv[0]) if argv and not argv[0].startswith("-") else None
    if config is not None:
        argv = ["--config", str(config), *argv[1:]]
    parser = parser or make_parser()
    try:
        parsed = parser.parse_args_and_config(argv)
    except ValueError as err:  # what HfArgumentParser and the dataclasses say of unknown keys and bad values
        raise FinetuneError(f"{config or parser.prog}: {' '.join(str(err).split())}") from None
    # as a subcommand, the parser also hands back the CLI's own defaults (`run`, `parser`) in a Namespace
    return parsed[: len(parser.dataclass_types)]
