"""Training configuration: trl's own dataclasses plus ours, read from YAML with CLI overrides by TrlParser,
which rejects keys that no dataclass declares."""

import argparse
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from trl import ModelConfig, SFTConfig, TrlParser

from finetune import FinetuneError
from finetune.benchmark import TRAIN_TASK

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
DTYPES = ("float32", "bfloat16", "float16")
LOSS_METRICS = ("loss", "eval_loss")  # what the Trainer reads for load_best_model_at_end without a metric
# transformers 5.23 renamed TrainingArguments' `gradient_checkpointing*` to `activation_checkpointing*` (the old names
# warn, and go in v6); 5.17-5.22 know only the old ones. Presets use the new names; a config's key or a flag given
# in either spelling reaches the installed transformers in the one it goes by.
CHECKPOINTING_NAMES = (
    ("gradient_checkpointing", "activation_checkpointing"),
    ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
)


@dataclass
class TaskArguments:
    task: str = field(
        default=TRAIN_TASK, metadata={"help": "lm-eval task whose docs and prompt make the training text"}
    )
    train_limit: int | None = field(default=None, metadata={"help": "use only the first N training rows"})
    eval_limit: int | None = field(default=None, metadata={"help": "use only the first N validation rows"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    overwrite: bool = field(
        default=False,
        metadata={"help": "replace a used output_dir (kept aside until the new adapter is complete)"},
    )
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
        metadata={
            "help": "keep only training rows whose `confidence` (as `finetune predict` writes it) is at least this"
        },
    )
    validation_loss: bool = field(
        default=True,
        metadata={
            "help": "compute the validation loss at each evaluation too (the validation macro-F1 picks the "
            "checkpoint; off in the CPU demo, where the loss pass costs more than the macro-F1)"
        },
    )
    balance_length_groups: bool = field(
        default=True,
        metadata={
            "help": "with train_sampling_strategy group_by_length, draw the order from the seed and the epoch (so "
            "that a resumed run trains the rows the uninterrupted one would) and on several processes give every "
            "process rows of the same lengths each step (false: transformers' order, whose processes get batches of "
            "different lengths, each step waiting for the longest)"
        },
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "leave out unusable rows of the files (counted in data_report.json) instead of stopping"},
    )
    divergence_guard: bool = field(
        default=True,
        metadata={
            "help": "score the base on the validation rows first (logged as step 0) and stop, keeping the best "
            "checkpoint, when 2 evaluations in a row score below it (or answer one label for 90%% of the rows) and "
            "no better than the evaluation before"
        },
    )
    lora_top_layers: float | None = field(
        default=None,
        metadata={
            "help": "LoRA on the top share of the base's blocks only (0.34: the top third), counted from the base's "
            "own depth; unset: every block"
        },
    )

    def __post_init__(self) -> None:
        if self.lora_top_layers is not None and not 0 < self.lora_top_layers <= 1:
            raise ValueError(f"lora_top_layers {self.lora_top_layers}: a share of the blocks, above 0 and at most 1")


@dataclass
class DistillArguments:
    """`finetune distill`: a teacher labels unlabeled text, a student learns from it; the student is the model and
    LoRA that the config describes, trained on its gold rows (the pinned split or --train_file) plus the teacher's
    labels (those at or above --min_confidence, which here filters the teacher's labels only)."""

    # Required, but checked after the config file is read: argparse would demand them as flags before that.
    teacher_adapter: str | None = field(
        default=None, metadata={"help": "the teacher's LoRA adapter (folder or Hub id)"}
    )
    unlabeled_file: str | None = field(
        default=None, metadata={"help": "text to label (.jsonl or .csv, column --text_column)"}
    )
    teacher_model: str | None = field(
        default=None, metadata={"help": "the teacher's base model (default: the student's, model_name_or_path)"}
    )
    teacher_dtype: str = field(
        default="float32", metadata={"help": f"the teacher base's dtype while it labels ({', '.join(DTYPES)})"}
    )
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

    def __post_init__(self) -> None:
        missing = [name for name in ("teacher_adapter", "unlabeled_file") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"set {' and '.join(missing)}, in the config file or as --flags")
        if self.teacher_dtype not in DTYPES:  # a config file's value is not checked by argparse's `choices`
            raise ValueError(f"teacher_dtype {self.teacher_dtype!r} is not one of {', '.join(DTYPES)}")


TRAIN_DATACLASSES = (TaskArguments, SFTConfig, ModelConfig)
DISTILL_DATACLASSES = (DistillArguments, *TRAIN_DATACLASSES)
HELP = {
    "train": "train a LoRA / QLoRA adapter: finetune train CONFIG.yaml|PRESET [--key value ...]",
    "distill": "a teacher labels text, a student trains on it, one report compares them: "
    "finetune distill STUDENT_CONFIG|PRESET --teacher_adapter A --unlabeled_file F [--key value ...]",
}
LAUNCH_EPILOG = (
    "Several GPUs of one host: --num_processes N [--accelerate_config ddp|fsdp_qlora|FILE] (accelerate launch runs "
    "N processes; the effective batch is per-device batch x N x accumulation)."
)


def config_file(name: str) -> Path:
    """A shipped preset by name (`embedded-cpu-quick`) or a path to a YAML file."""
    return yaml_file(name, CONFIGS_DIR, "preset")


def yaml_file(name: str, folder: Path, kind: str) -> Path:
    """A path to a YAML file, or one shipped in `folder` by name; else one line naming the closest shipped one."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    shipped = folder / f"{name}.yaml"
    if shipped.exists():
        return shipped
    known = sorted(p.stem for p in folder.glob("*.yaml"))
    close = closest(name, known)
    guess = f"did you mean {close}? " if close else ""
    raise FinetuneError(f"no config file {name!r} and no {kind} of that name ({guess}{kind}s: {', '.join(known)})")


def presets() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def make_parser(subparsers: argparse._SubParsersAction | None = None, command: str = "train") -> TrlParser:
    """trl's script pattern: the same parser stands alone or as the `train` (or `distill`) command of the CLI."""
    types = DISTILL_DATACLASSES if command == "distill" else TRAIN_DATACLASSES
    if subparsers is None:
        return TrlParser(types, prog=f"finetune {command}")
    return subparsers.add_parser(command, dataclass_types=types, help=HELP[command], epilog=LAUNCH_EPILOG)


def installed_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each activation-checkpointing key to the spelling the installed transformers goes by: the new names to the old
    on 5.17-5.22; from 5.23 the old to the new, which win there (an old-spelled flag over a new-spelled config key
    would be ignored) and are all that v6 keeps."""
    declared = {action.dest for action in parser._actions}
    return {
        name: other
        for old, new in CHECKPOINTING_NAMES
        for name, other in ((old, new) if new in declared else (new, old),)
    }


def installed_flags(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """`argv` with each `--key` / `--key=value` of `installed_names` in the installed transformers' spelling."""
    names = installed_names(parser)

    def spelled(arg: str) -> str:
        flag, equals, value = arg.partition("=")
        key = flag.removeprefix("--").replace("-", "_")  # the parser takes dashed spellings too
        return f"--{names[key]}{equals}{value}" if flag.startswith("--") and key in names else arg

    return [spelled(arg) for arg in argv]


def parse_train_args(argv: list[str], parser: TrlParser | None = None) -> tuple:
    """`CONFIG [--key value ...]`: the YAML sets the defaults, the flags override them. One instance of each of
    the parser's dataclasses: (TaskArguments, SFTConfig, ModelConfig) for `train`, DistillArguments first for
    `distill`."""
    if argv[:1] == ["--config"]:  # trl's spelling of the same
        argv = argv[1:]
    if not argv or argv[0].startswith("-"):  # trl's defaults alone train no sensible model, and fail on a CPU
        raise FinetuneError(f"give a PRESET or CONFIG.yaml first (presets: {', '.join(presets())})")
    config = config_file(argv[0])
    parser = parser or make_parser()
    argv = ["--config", str(config), *installed_flags(argv[1:], parser)]
    check_keys(config, parser)
    # trl reads the file's keys as defaults and returns those it has no option for, unused; a key of the other
    # spelling is set here, as the default of the option the installed transformers has.
    names = installed_names(parser)
    file_keys = yaml.safe_load(config.read_text()) or {}
    parser.set_defaults_with_config(**{names[key]: value for key, value in file_keys.items() if key in names})
    try:
        *parsed, _, from_flags = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
    except ValueError as err:  # what HfArgumentParser and the dataclasses say of bad values
        raise FinetuneError(f"{config}: {' '.join(str(err).split())}") from None
    if from_flags:
        raise FinetuneError(f"unrecognized arguments: {unknown_flags(from_flags, parser)}")
    parsed = parsed[: len(parser.dataclass_types)]
    if not parsed[-1].use_peft:  # trl's default is a full fine-tune, which this tool neither saves nor scores
        raise FinetuneError(f"{config}: finetune trains LoRA adapters: set use_peft: true")
    task_args, sft = parsed[-3], parsed[-2]
    if not task_args.validation_loss and sft.load_best_model_at_end and sft.metric_for_best_model in LOSS_METRICS:
        raise FinetuneError(
            f"{config}: validation_loss: false leaves no loss to keep the best checkpoint by: "
            "set metric_for_best_model: macro_f1"
        )
    return tuple(parsed)  # as the CLI's subparser, a Namespace of its defaults follows


def check_keys(config: Path, parser: argparse.ArgumentParser) -> None:
    """Unknown keys of a config file, named before the dataclasses judge the values (whose errors would hide
    a misspelled key behind a complaint about a default)."""
    try:
        document = yaml.compose(config.read_text())  # yaml's nodes, which know their lines
    except yaml.YAMLError as err:
        raise FinetuneError(f"{config}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(document, yaml.MappingNode):
        raise FinetuneError(f"{config}: expected a mapping of keys to values")
    known = {action.dest for action in parser._actions} | {"env"} | installed_names(parser).keys()  # trl reads `env`
    unknown = [key for key, _ in document.value if key.value not in known]
    if unknown:
        raise FinetuneError(
            "; ".join(
                f"{config}:{key.start_mark.line + 1}: unknown key {unknown_flags([key.value], parser, prefix='')}"
                for key in unknown
            )
        )


def unknown_flags(args: list[str], parser: argparse.ArgumentParser, prefix: str = "--") -> str:
    """Arguments no option takes (the flags, if any, without their values), each with the closest known flag."""
    known = list(  # in the one dialect: an option's dashed alias is suggested as its underscore name
        dict.fromkeys(
            option.removeprefix("--").replace("-", "_")
            for option in parser._option_string_actions
            if option.startswith("--")
        )
    )
    words = []
    for arg in [arg for arg in args if arg.startswith(prefix)] or args:
        close = closest(arg.split("=")[0].removeprefix(prefix), known) if arg.startswith(prefix) else None
        words.append(f"{arg} (did you mean {prefix}{close}?)" if close else arg)
    return ", ".join(words)


def closest(word: str, known: list[str]) -> str | None:
    """difflib's nearest names, preferring one that the word shortens or extends (`lora_rank` -> `lora_r`)."""
    near = difflib.get_close_matches(word, known, n=3)
    return min(near, key=lambda name: not (word.startswith(name) or name.startswith(word)), default=None)
