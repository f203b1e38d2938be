"""Training configuration: trl's own dataclasses plus ours, read from YAML with CLI overrides by TrlParser,
which rejects keys that no dataclass declares."""

from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig, SFTConfig, TrlParser

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


def config_file(name: str) -> Path:
    """A shipped preset by name (`embedded-cpu-quick`) or a path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    preset = CONFIGS_DIR / f"{name}.yaml"
    if preset.exists():
        return preset
    known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
    raise SystemExit(f"no config file {name!r} and no preset of that name (presets: {known})")


def parse_train_args(argv: list[str]) -> tuple[TaskArguments, SFTConfig, ModelConfig]:
    """`CONFIG [--key value ...]`: the YAML sets the defaults, the flags override them."""
    parser = TrlParser((TaskArguments, SFTConfig, ModelConfig), prog="finetune train")
    if argv and not argv[0].startswith("-"):
        argv = ["--config", str(config_file(argv[0])), *argv[1:]]
    return parser.parse_args_and_config(argv)
