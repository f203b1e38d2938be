"""`finetune sweep`: hyperparameter search over `finetune train` runs with Optuna (its study, TPE sampler and median
pruner), scored by the benchmark's own measure, validation macro-F1, on development rows drawn from the training
rows. transformers' `Trainer.hyperparameter_search` needs a `model_init`, which trl's SFTTrainer does not take, so
each trial is a whole `finetune train` run of the config with the trial's values, reporting to Optuna through a
callback. The study lives in the output folder (`study.db`), so the same command continues an interrupted sweep."""

import argparse
import gc
import json
import math
import random
import shutil
from dataclasses import fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.distributions import (  # noqa: E402
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from tqdm import tqdm  # noqa: E402
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments  # noqa: E402
from trl import ModelConfig, SFTConfig, TrlParser  # noqa: E402

from finetune import FinetuneError, first_line  # noqa: E402
from finetune.benchmark import Benchmark, load_benchmark  # noqa: E402
from finetune.config import (  # noqa: E402
    CONFIGS_DIR,
    TaskArguments,
    config_file,
    installed_flags,
    installed_names,
    make_parser,
    parse_train_args,
    unknown_flags,
    yaml_file,
)
from finetune.dataset import user_tables  # noqa: E402
from finetune.guard import Diverged  # noqa: E402
from finetune.outputs import check_output, is_used, recover, written  # noqa: E402
from finetune.train import train  # noqa: E402
from lm_eval_tasks.tweet_sentiment.utils import LABELS  # noqa: E402

SPACES_DIR = CONFIGS_DIR / "sweep"  # a subfolder: the presets are configs/*.yaml, found by name
STUDY, DEV, TRAIN, TABLE, PLOT, BEST = "study.db", "dev.jsonl", "train.jsonl", "trials.csv", "trials.png", "best.yaml"
STUDY_NAME = "finetune-sweep"
DEV_SHARE, DEV_MAX = 0.1, 400  # the development rows by default: a tenth of the training rows, at most 400
FOLDER, RETRY_OF, STOPPED, SETTINGS = "folder", "retry_of", "stopped", "settings"  # Optuna user attributes
METRIC = "eval_macro_f1"
# Each trial keeps the checkpoint its score is of: the best validation macro-F1.
KEEP_BEST = ["--load_best_model_at_end", "true", "--metric_for_best_model", "macro_f1", "--greater_is_better", "true"]
# Each trial is scored at fifths of its own run, whatever its batch and epochs (transformers reads an eval_steps
# below 1 as a share of the run, and evaluates the last step too), and reports each evaluation at the fifth it is
# nearest, so that the pruner compares trials at the same points of their runs (a preset's eval_steps are counted
# for its own batch). Where the sweep's command line sets any of these keys, its cadence is taken instead.
FIFTHS = 5
CADENCE = ["--eval_strategy", "steps", "--eval_steps", "0.2", "--save_strategy", "steps", "--save_steps", "0.2"]
CADENCE_KEYS = {"eval_strategy", "eval_steps", "save_strategy", "save_steps"}
RUN_KEYS = ("resume", "overwrite")  # how a command treats its output folder: not a setting of the config
# What the sweep sets for each trial: its folder and rows, and the checkpoint its score is of.
SET_BY_SWEEP = (
    *RUN_KEYS,
    "output_dir",
    "train_file",
    "validation_file",
    "text_column",
    "label_column",
    "min_confidence",
    "skip_bad_rows",
    "eval_limit",
    "load_best_model_at_end",
    "metric_for_best_model",
    "greater_is_better",
)
RANGE_KEYS = {"low", "high", "log", "step"}
SPEC_FORM = "expected {choices: [A, B, ...]} or {low: A, high: B} with optional log: true or step: S"
# What a trial's interruption message tells the user to run.
RERUN = "the same `finetune sweep` command (without --overwrite): the sweep continues this trial from its checkpoint"


def load_search_space(path: Path, parser: TrlParser) -> dict[str, BaseDistribution]:
    """Optuna's distribution for each key, every mistake one line naming the file and line: a key that no
    training dataclass declares (with the closest one), a key the sweep sets itself, a malformed range."""
    try:
        text = path.read_text()
        document = yaml.compose(text)  # yaml's nodes, which know their lines
    except yaml.YAMLError as err:
        raise FinetuneError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(document, yaml.MappingNode) or not document.value:
        raise FinetuneError(f"{path}: expected a mapping of config keys to ranges")
    actions = {action.dest: action for action in parser._actions}
    names, specs = installed_names(parser), yaml.safe_load(text)
    space = {}
    for node, _ in document.value:
        key, where = names.get(node.value, node.value), f"{path}:{node.start_mark.line + 1}"
        if key not in actions:
            raise FinetuneError(f"{where}: unknown key {unknown_flags([key], parser, prefix='')}")
        if key in SET_BY_SWEEP:
            raise FinetuneError(f"{where}: {key} is set by the sweep for each trial, not searched")
        if key in space:  # the other spelling of a key given above
            raise FinetuneError(f"{where}: {node.value} is {key}, searched already")
        try:
            space[key] = distribution(specs[node.value])
            check_values(actions[key], space[key])
        except ValueError as err:
            raise FinetuneError(f"{where}: {key}: {' '.join(str(err).split())}") from None
    return space


def distribution(spec: Any) -> BaseDistribution:
    """`{choices: [...]}`, or `{low, high[, log][, step]}`: whole numbers where the bounds (and step) are."""
    if not isinstance(spec, dict) or not (set(spec) == {"choices"} or {"low", "high"} <= set(spec) <= RANGE_KEYS):
        raise ValueError(SPEC_FORM)
    if "choices" in spec:
        choices = spec["choices"]
        scalars = isinstance(choices, list) and all(isinstance(c, bool | int | float | str) for c in choices)
        if not (scalars and choices):
            raise ValueError(f"choices: a list of numbers, words or booleans, got {choices!r}")
        return CategoricalDistribution(choices)
    low, high = number(spec["low"]), number(spec["high"])
    step, log = number(spec["step"]) if "step" in spec else None, spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"log: true or false, got {log!r}")
    if all(isinstance(value, int) for value in (low, high, 1 if step is None else step)):
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(low, high, log=log, step=step)


def check_values(action: argparse.Action, dist: BaseDistribution) -> None:
    """Each choice, or each bound, as the key's flag takes it: a misspelled word is named with its line here, not
    by argparse in the middle of the sweep."""
    for value in dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high):
        try:
            taken = action.type(str(value)) if action.type else str(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise ValueError(f"{value!r} is not a value of --{action.dest}") from None
        if action.choices is not None and taken not in action.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, action.choices))}")


def number(value: Any) -> int | float:
    """A bound as YAML gave it. YAML 1.1 reads `1e-5` (no dot) as a string, which a config file's value may be too
    (argparse converts it); here too it is a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise ValueError(f"{value!r} is not a number")


def suggest(trial: optuna.Trial, space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """The trial's value of each key, through Optuna's sampler (or the values queued for a retried trial)."""
    values = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = trial.suggest_categorical(key, dist.choices)
        elif isinstance(dist, IntDistribution):
            values[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            values[key] = trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return values


def flag_keys(argv: list[str], parser: TrlParser) -> list[str]:
    """The config keys given as flags (`--key value`, `--key=value`, `--dashed-key`), by their dataclass names."""
    actions = parser._option_string_actions
    return [actions[arg.split("=")[0]].dest for arg in argv if arg.split("=")[0] in actions]


def plain(value: Any) -> Any:
    """A parsed config value as YAML writes it and the config parser reads it back."""
    if isinstance(value, Enum):
        return value.value
    return list(value) if isinstance(value, tuple) else value


def given_config(argv: list[str], parser: TrlParser, parsed: tuple) -> dict[str, Any]:
    """The config as the user gave it, as a mapping: the file's keys, then those of the flags with their parsed
    values; without the keys that say how to treat the output folder."""
    config = yaml.safe_load(config_file(argv[0]).read_text()) or {}
    values = {field.name: getattr(args, field.name) for args in parsed for field in fields(args)}
    config.update({key: plain(values[key]) for key in flag_keys(argv[1:], parser)})
    return {key: value for key, value in config.items() if key not in RUN_KEYS}


def training_rows(benchmark: Benchmark, task_args: TaskArguments) -> list[dict]:
    """The rows `finetune train` would train on: the user's --train_file (read and filtered as it reads them), or
    the task's training split."""
    tables = user_tables(replace(task_args, validation_file=None))
    return tables["train"].rows if "train" in tables else list(benchmark.task.training_docs())


def split_rows(rows: list[dict], dev_size: int | None, seed: int) -> tuple[list[dict], list[dict]]:
    """The development rows, a seeded sample of the training rows that scores every trial, and the rest, that the
    trials train on: never the validation rows that pick a final run's checkpoints, never test."""
    size = dev_size or min(DEV_MAX, max(1, round(len(rows) * DEV_SHARE)))
    if size >= len(rows):
        raise FinetuneError(f"--dev_size {size} leaves no training rows of the {len(rows)}")
    dev = set(random.Random(seed).sample(range(len(rows)), size))
    return [row for i, row in enumerate(rows) if i in dev], [row for i, row in enumerate(rows) if i not in dev]


def write_rows(rows: list[dict], dest: Path) -> None:
    """Rows as --train_file and --validation_file read them: the text and the label's word (and the id, if any)."""
    lines = [
        json.dumps({**({"id": row["id"]} if "id" in row else {}), "text": row["text"], "label": LABELS[row["label"]]},
                   ensure_ascii=False)
        for row in rows
    ]  # fmt: skip
    with written(dest, overwrite=True, folder=False) as staging:
        staging.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


class ReportToOptuna(TrainerCallback):
    """Each evaluation's validation macro-F1 to the trial, and training stopped (the best checkpoint kept, as at any
    end) once the pruner judges the trial hopeless. The trial's value is the Trainer's best metric, the score of
    the checkpoint `load_best_model_at_end` keeps, over the whole run even where it continued from a checkpoint."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.pruned: str | None = None
        self.best: float | None = None

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: dict, **kw
    ) -> None:
        value = metrics[METRIC]
        fifth = round(FIFTHS * state.global_step / state.max_steps)  # where trials of other lengths meet
        self.trial.report(value, fifth)
        if self.trial.should_prune():
            self.pruned = (
                f"validation macro-F1 {value:.4f} at step {state.global_step} ({fifth}/{FIFTHS} of the run), below "
                "the completed trials' median there"
            )
            control.should_training_stop = True

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self.best = state.best_metric


class Objective:
    """One trial: the config with the trial's values, trained by `finetune train`'s own `train` into the trial's
    folder. A trial that diverged or ran out of memory is pruned with its reason; an error the user can fix ends
    the sweep with that error alone (Optuna would print it with a traceback): it is kept, the trial failed, and
    the study stopped."""

    def __init__(
        self,
        benchmark: Benchmark,
        argv: list[str],
        parser: TrlParser,
        space: dict[str, BaseDistribution],
        out: Path,
    ) -> None:
        self.benchmark, self.argv, self.parser, self.space, self.out = benchmark, argv, parser, space, out
        self.error: FinetuneError | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self.run(trial)
        except FinetuneError as err:
            self.error = err
            trial.study.stop()
            return math.nan  # Optuna fails the trial, without a traceback

    def run(self, trial: optuna.Trial) -> float:
        values = suggest(trial, self.space)
        folder = self.out / trial.user_attrs.get(FOLDER, f"trial-{trial.number}")
        trial.set_user_attr(FOLDER, folder.name)
        resume = any(folder.glob("checkpoint-*"))
        if not resume:
            shutil.rmtree(folder, ignore_errors=True)
        task_args, sft, model_args = self.configs(trial.number, values, folder, resume)
        report = ReportToOptuna(trial)
        stopped = None
        try:
            train(self.benchmark, task_args, sft, model_args, RERUN, callbacks=[report])
        except Diverged as err:
            stopped = err.what  # the guard's advice, a lower rate or a sweep, is this sweep's to act on
        except torch.OutOfMemoryError as err:
            stopped = first_line(err)  # raised below, outside this block, so that no frame of the run outlives it
        drop_checkpoints(folder)
        if stopped or report.pruned:
            trial.set_user_attr(STOPPED, stopped or report.pruned)
            raise optuna.TrialPruned(stopped or report.pruned)
        if report.best is None:
            raise FinetuneError(f"{folder}: the trial ended before its first evaluation; lower eval_steps")
        return report.best

    def configs(
        self, number: int, values: dict[str, Any], folder: Path, resume: bool
    ) -> tuple[TaskArguments, SFTConfig, ModelConfig]:
        """The user's config and flags with the trial's values, parsed as `finetune train` parses them (so a value
        is checked as a flag's would be), training on the sweep's rows and scored on its development rows."""
        flags = [arg for key, value in values.items() for arg in (f"--{key}", str(value))]
        try:
            task_args, sft, model_args = parse_train_args(
                [*self.argv, *KEEP_BEST, *flags, "--output_dir", str(folder)], self.parser
            )
        except FinetuneError as err:
            shown = ", ".join(f"{key} {value}" for key, value in values.items())
            raise FinetuneError(f"trial {number} ({shown}): {err}") from None
        task_args = replace(
            task_args,
            train_file=str(self.out / TRAIN),
            validation_file=str(self.out / DEV),
            text_column="text",
            label_column="label",
            min_confidence=None,  # applied when the rows were drawn
            skip_bad_rows=False,
            eval_limit=None,  # the development rows are --dev_size's
            resume=resume,
            overwrite=False,
        )
        return task_args, sft, model_args


def drop_checkpoints(folder: Path) -> None:
    """A finished trial is never continued: its adapter stays, its checkpoints (optimizer state and all) go."""
    for checkpoint in folder.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)


def retry_interrupted(study: optuna.Study, out: Path) -> None:
    """A trial the last run left RUNNING was killed with it: it is failed. Every failed trial not yet retried is
    queued again with its values and its folder, where it continues from its last checkpoint (the staging a kill
    left beside the folder removed)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs.get(RETRY_OF) for trial in trials}
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.number not in retried:
            folder = trial.user_attrs.get(FOLDER, f"trial-{trial.number}")
            recover(out / folder)
            study.enqueue_trial(trial.params, user_attrs={FOLDER: folder, RETRY_OF: trial.number})


def check_settings(study: optuna.Study, settings: dict[str, Any], out: Path) -> None:
    """A study continues only under the settings it began with: its trials must be comparable."""
    settings = json.loads(json.dumps(settings))
    before = study.user_attrs.get(SETTINGS)
    if before is None:
        study.set_user_attr(SETTINGS, settings)
        return
    config, old = settings["config"], before["config"]
    changed = [key for key in sorted(config.keys() | old.keys()) if config.get(key) != old.get(key)]
    changed += [part for part in ("search_space", "dev_size") if settings[part] != before[part]]
    if changed:
        raise FinetuneError(
            f"{out}: holds a sweep of other settings ({', '.join(changed)}); rerun its command to continue it, or pass "
            "--overwrite true to start over"
        )


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def write_results(study: optuna.Study, out: Path, config: dict[str, Any]) -> None:
    """The table of every trial, its plot, and the best completed trial as a config `finetune train` takes."""
    table = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
    table = table.convert_dtypes()  # a column with gaps keeps its whole numbers whole (retry_of 1, not 1.0)
    with written(out / TABLE, overwrite=True, folder=False) as staging:
        table.to_csv(staging, index=False)
    trials = study.get_trials(deepcopy=False)
    with written(out / PLOT, overwrite=True, folder=False) as staging:
        plot_trials(trials, staging)
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    if not complete:
        return
    best = max(complete, key=lambda trial: trial.value)
    best_config = {**config, **best.params, "output_dir": str(out / "best")}
    header = (
        f"# finetune sweep {out}: trial {best.number}, validation macro-F1 {best.value:.4f} on its development "
        f"rows ({DEV}). Train it on all the training rows with: finetune train {out / BEST}\n"
    )
    with written(out / BEST, overwrite=True, folder=False) as staging:
        staging.write_text(header + yaml.safe_dump(best_config, sort_keys=False))


def plot_trials(trials: list[FrozenTrial], path: Path) -> None:
    """Each trial's validation macro-F1 (a pruned one's last, marked), and the best completed so far."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for state, marker, label in ((TrialState.COMPLETE, "o", "completed"), (TrialState.PRUNED, "x", "pruned")):
        shown = [trial for trial in trials if trial.state == state and trial.value is not None]
        ax.scatter([t.number for t in shown], [t.value for t in shown], marker=marker, label=label)
    best, steps = -math.inf, []
    for trial in trials:  # the line runs on through the trials after the best, whatever their outcome
        if trial.state == TrialState.COMPLETE:
            best = max(best, trial.value)
        if best > -math.inf:
            steps.append((trial.number, best))
    if steps:
        ax.step(*zip(*steps), where="post", color="black", linewidth=1, label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation macro-F1 (development rows)")
    ax.set_title("finetune sweep")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def open_study(out: Path, overwrite: bool, n_startup_trials: int, seed: int) -> optuna.Study:
    """The study in `out/study.db`, new or as an interrupted run left it: a folder that holds something else is
    refused, and --overwrite true starts over in an emptied folder."""
    check_output(out, overwrite=overwrite or (out / STUDY).is_file(), flag="--overwrite true")
    if overwrite and is_used(out):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=f"sqlite:///{(out / STUDY).resolve()}",
        study_name=STUDY_NAME,
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials),
        load_if_exists=True,
    )
    # seeded past the trials so far: a continued sweep would otherwise draw the first run's values again
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def sweep(
    argv: list[str],
    n_trials: int,
    search_space: str,
    dev_size: int | None,
    n_startup_trials: int,
) -> str:
    """Run the study in the config's output_dir until `n_trials` trials have finished (completed or pruned),
    counting those of an interrupted run of the same sweep; returns what to read and run next. `argv` is
    `CONFIG [--key value ...]` as for `finetune train`. The caller holds the output folder (`one_run`)."""
    argv = argv[1:] if argv[:1] == ["--config"] else argv
    parser = make_parser()
    argv = [*argv[:1], *installed_flags(argv[1:], parser)]  # the flag names `flag_keys` finds
    given = set(flag_keys(argv[1:], parser))
    if not given & CADENCE_KEYS:  # a cadence of the user's own is taken whole
        argv = [*argv[:1], *CADENCE, *argv[1:]]
    parsed = parse_train_args(argv, parser)
    task_args, sft, _ = parsed
    if sft.eval_strategy == "no":
        raise FinetuneError("finetune sweep scores each trial at its evaluations: set eval_strategy to steps or epoch")
    space_file = yaml_file(search_space, SPACES_DIR, "search space")
    space = load_search_space(space_file, parser)
    fixed = sorted(given & space.keys())
    if fixed:
        raise FinetuneError(f"--{fixed[0]} is searched ({space_file}): drop the flag, or the key from the search space")
    config = given_config(argv, parser, parsed)
    benchmark = load_benchmark(task_args.task, bool(task_args.train_file), bool(task_args.validation_file))
    dev, rest = split_rows(training_rows(benchmark, task_args), dev_size, sft.seed)

    out = Path(sft.output_dir)
    study = open_study(out, task_args.overwrite, n_startup_trials, sft.seed)
    settings = {
        "config": {key: value for key, value in config.items() if key != "output_dir"},
        "search_space": {key: distribution_to_json(dist) for key, dist in space.items()},
        "dev_size": dev_size,
    }
    check_settings(study, settings, out)
    if not ((out / DEV).is_file() and (out / TRAIN).is_file()):  # drawn once: the study's trials share them
        write_rows(dev, out / DEV)
        write_rows(rest, out / TRAIN)
    retry_interrupted(study, out)

    objective = Objective(benchmark, argv, parser, space, out)
    done = finished(study)
    with tqdm(total=n_trials, initial=min(done, n_trials), unit="trial", desc="finetune sweep") as bar:

        def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            gc.collect()  # the trainer and its callbacks hold each other: the model goes before the next one loads
            write_results(study, out, config)
            bar.update(trial.state in (TrialState.COMPLETE, TrialState.PRUNED))
            if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
                bar.set_postfix(best=f"{study.best_value:.4f}")

        study.optimize(objective, n_trials=max(0, n_trials - done), callbacks=[after_trial])
    if objective.error is not None:
        raise objective.error
    write_results(study, out, config)
    return summary(study, out)


def summary(study: optuna.Study, out: Path) -> str:
    """The trials by outcome, where they are written, the best one and the command that trains it."""
    trials = study.get_trials(deepcopy=False)
    states = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    counts = ", ".join(f"{sum(t.state == state for t in trials)} {name}" for state, name in states.items())
    lines = [f"finetune sweep: {counts}; every trial in {out / TABLE} and {out / PLOT}"]
    if any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial
        values = ", ".join(f"{key} {value}" for key, value in best.params.items())
        lines.append(f"best: trial {best.number}, validation macro-F1 {best.value:.4f} on {out / DEV} ({values})")
        lines.append(f"train it on all the training rows: finetune train {out / BEST}")
    return "\n".join(lines)
