"""`finetune sweep`: Optuna's study over `finetune train` runs of the tiny model, scored by validation macro-F1 on rows
drawn from the training rows; its best trial a config that trains as it is; a hopeless trial pruned at an
evaluation; a sweep killed with `kill -9` continued by the same command; a bad search space one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

import finetune.sweep
from finetune import FinetuneError
from finetune.cli import main
from finetune.config import installed_names, make_parser, parse_train_args
from finetune.guard import Diverged
from finetune.sweep import BEST, DEV, STUDY, STUDY_NAME, TRAIN, load_search_space
from lm_eval_tasks.tweet_sentiment.utils import DATA_DIR

TINY_CONFIG = Path(__file__).parent / "tiny.yaml"
REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
# Trials of a few seconds: 4 steps of 16 rows, scored on 16 development rows at steps 2 and 4.
BUDGET = ["--train_limit", "32", "--dev_size", "16", "--max_steps", "4", "--eval_steps", "2", "--save_steps", "2",
          "--validation_loss", "false"]  # fmt: skip


def space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def sweep_args(model: Path, out: Path, search_space: Path, *flags: str) -> list[str]:
    return ["sweep", str(TINY_CONFIG), "--model_name_or_path", str(model), "--output_dir", str(out),
            "--search_space", str(search_space), *BUDGET, *flags]  # fmt: skip


def study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / STUDY}")


def test_a_sweep_writes_every_trial_and_a_best_config_that_trains_as_it_is(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "sweep"
    searched = space(tmp_path, "learning_rate: {low: 1e-3, high: 2.0e-2, log: true}\nlora_r: {choices: [4, 8]}\n")
    main(sweep_args(tiny_model_dir, out, searched, "--n_trials", "3", "--lora_alpha", "8"))

    trials = study(out).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all(t.value == max(t.intermediate_values.values()) for t in trials), "the score of the kept checkpoint"
    best = max(trials, key=lambda t: t.value)
    assert f"best: trial {best.number}, validation macro-F1 {best.value:.4f}" in capsys.readouterr().out
    dev, rows = (out / DEV).read_text().splitlines(), (out / TRAIN).read_text().splitlines()
    pinned = (DATA_DIR / "train.jsonl").read_text().splitlines()
    assert len(dev) == 16 and len(rows) == len(pinned) - 16, "the development rows are drawn from the training rows"
    assert not {json.loads(line)["id"] for line in dev} & {json.loads(line)["id"] for line in rows}
    table = (out / "trials.csv").read_text().splitlines()
    assert len(table) == 4 and all(",COMPLETE," in line for line in table[1:])
    assert (out / "trials.png").read_bytes().startswith(b"\x89PNG")
    assert not list(out.glob("trial-*/checkpoint-*")), "a finished trial keeps its adapter, not its checkpoints"
    assert all((out / f"trial-{t.number}" / "adapter_model.safetensors").is_file() for t in trials)

    # the config as given (file and flags), with the best trial's values and a folder of its own
    task_args, sft, model_args = parse_train_args([str(out / BEST)])
    assert (sft.learning_rate, model_args.lora_r) == (best.params["learning_rate"], best.params["lora_r"])
    assert (model_args.lora_alpha, task_args.train_limit, sft.max_steps) == (8, 32, 4)
    assert (sft.eval_steps, sft.save_steps) == (2, 2), "the sweep's flags over its cadence"
    assert task_args.train_file is None, "the final run trains on all the training rows, validated on the pinned ones"
    assert sft.output_dir == str(out / "best")
    main(["train", str(out / BEST)])
    assert (out / "best" / "adapter_model.safetensors").is_file()


def test_trials_are_evaluated_at_the_same_fifths_of_their_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A preset's eval_steps count steps of its own batch; a trial of another batch or length is evaluated at the
    fifths of its run instead, and each evaluation reaches Optuna at its fifth, where other trials are compared."""
    out = tmp_path / "sweep"
    main(["sweep", str(TINY_CONFIG), "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out),
          "--search_space", str(space(tmp_path, "lora_r: {choices: [4]}\n")), "--n_trials", "1",
          "--train_limit", "32", "--dev_size", "16", "--max_steps", "10", "--validation_loss", "false"])  # fmt: skip

    (trial,) = study(out).trials
    log = json.loads((out / "trial-0" / "train_log.json").read_text())
    assert [row["step"] for row in log if "eval_macro_f1" in row] == [2, 4, 6, 8, 10]
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5]
    assert yaml.safe_load((out / BEST).read_text())["eval_steps"] == 0.2, "the best config evaluated as its trial was"


def test_a_hopeless_trial_is_pruned_at_its_first_evaluation(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The second trial's learning rate makes its weights NaN within a step, and a NaN model answers the first label,
    `negative`, which none of these rows has: macro-F1 0 at step 2, below the first trial's, and it stops there. Optuna
    holds each evaluation at the fifth of the run it is nearest (step 2 of 4: the second), where trials of other
    lengths are compared."""
    rows = [json.loads(line) for line in (DATA_DIR / "train.jsonl").read_text().splitlines()]
    train_file = tmp_path / "mine.jsonl"  # the user's own rows, with another column name
    train_file.write_text("".join(json.dumps({"tweet": r["text"], "label": r["label_text"]}) + "\n" for r in rows[:200]
                                  if r["label_text"] != "negative"))  # fmt: skip
    out = tmp_path / "sweep"
    out.mkdir()
    queued = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / STUDY}", direction="maximize")
    for rate in (0.01, 1000.0):  # in this order: the pruner judges the second against the first
        queued.enqueue_trial({"learning_rate": rate})
    searched = space(tmp_path, "learning_rate: {choices: [0.01, 1000.0]}\n")
    main(sweep_args(tiny_model_dir, out, searched, "--n_trials", "2", "--n_startup_trials", "1",
                    "--train_file", str(train_file), "--text_column", "tweet"))  # fmt: skip

    first, second = study(out).trials
    assert (first.state, second.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    assert first.intermediate_values[2] > 0 and second.intermediate_values == {2: 0.0}
    assert second.user_attrs["stopped"] == (
        "validation macro-F1 0.0000 at step 2 (2/5 of the run), below the completed trials' median there"
    )
    log = json.loads((out / "trial-1" / "train_log.json").read_text())
    assert max(row["step"] for row in log) == 2, "training stopped at the evaluation that pruned it"
    assert (out / BEST).is_file() and yaml.safe_load((out / BEST).read_text())["learning_rate"] == 0.01


def test_a_diverged_trial_or_one_out_of_memory_is_pruned_with_its_reason(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pruned, so that the sampler learns to avoid the region; the guard's advice (a lower rate, or a sweep) is the
    sweep's own to act on, and stays out of the reason."""
    collapsed = Diverged("trial-0: stopped at step 6 of 9: the answers collapsed", "try a lower --learning_rate")
    stops = iter([collapsed, torch.OutOfMemoryError("CUDA")])

    def train(*args, **kwargs) -> Path:
        raise next(stops)

    monkeypatch.setattr(finetune.sweep, "train", train)
    out = tmp_path / "sweep"
    main(sweep_args(tiny_model_dir, out, space(tmp_path, "lora_r: {choices: [4]}\n"), "--n_trials", "2"))
    trials = study(out).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert [t.user_attrs["stopped"] for t in trials] == [
        "trial-0: stopped at step 6 of 9: the answers collapsed",
        "CUDA",
    ]
    assert not (out / BEST).exists(), "no trial completed"


def test_a_trial_value_the_config_refuses_ends_the_sweep_in_one_line_naming_the_trial(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit:
        main(sweep_args(tiny_model_dir, out, space(tmp_path, "warmup_steps: {choices: [-1]}\n")))
    assert exit.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    # then transformers' own reason, worded by its release ("Got warmup_steps = -1.0, Expected value warmup_steps >=
    # 0" in 5.25; "warmup_steps must be an integer or a float" in 5.17)
    prefix = f"finetune sweep: error: trial 0 (warmup_steps -1): {TINY_CONFIG}: "
    assert last.startswith(prefix) and "warmup_steps" in last.removeprefix(prefix)
    assert "Traceback" not in err
    assert [t.state for t in study(out).trials] == [TrialState.FAIL]


def test_a_sweep_killed_mid_trial_is_continued_by_the_same_command(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "sweep"
    argv = sweep_args(tiny_model_dir, out, space(tmp_path, "learning_rate: {low: 1.0e-3, high: 1.0e-2}\n"),
                      "--n_trials", "3")  # fmt: skip
    checkpoint = out / "trial-1" / "checkpoint-2"
    with (tmp_path / "stderr.txt").open("w") as err:  # a file: nobody reads the progress bars while the test waits
        process = subprocess.Popen([sys.executable, "-m", "finetune.cli", *argv], stderr=err, env=ENV)
    deadline = time.monotonic() + 240
    while not (checkpoint / "trainer_state.json").is_file():  # the second trial, half-way
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.txt").read_text()[-2000:]
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = study(out).trials
    assert [t.state for t in killed] == [TrialState.COMPLETE, TrialState.RUNNING] and checkpoint.is_dir()

    main(argv)
    trials = study(out).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    retry = trials[2]
    assert retry.params == killed[1].params and retry.user_attrs == {"folder": "trial-1", "retry_of": 1}
    log = json.loads((out / "trial-1" / "train_log.json").read_text())
    assert [row["step"] for row in log if "eval_macro_f1" in row] == [2, 4], "continued from the killed trial's step 2"
    assert trials[3].params != trials[0].params, "a continued sweep draws new values, not the first run's again"
    assert (out / BEST).is_file()

    with pytest.raises(SystemExit):  # another sweep's settings would make its trials incomparable
        main([*argv, "--max_steps", "6"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"finetune sweep: error: {out}: holds a sweep of other settings (max_steps); rerun its command to continue "
        "it, or pass --overwrite true to start over"
    )


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("learning_rate: {low: 1.0e-4, high: 1.0e-3}\nlora_rank: {choices: [8]}\n", 2,
         "unknown key lora_rank (did you mean lora_r?)"),
        ("output_dir: {choices: [a, b]}\n", 1, "output_dir is set by the sweep for each trial, not searched"),
        ("lora_r: {choices: []}\n", 1, "lora_r: choices: a list of numbers, words or booleans, got []"),
        ("lora_r: {low: 4.5, high: 64}\n", 1, "lora_r: 4.5 is not a value of --lora_r"),
        ("lr_scheduler_type: {choices: [cosine, sideway]}\n", 1, "lr_scheduler_type: 'sideway' is not one of linear,"),
        ("learning_rate: {low: 0, high: 1.0e-3, log: true}\n", 1, "learning_rate: `low > 0` must hold for `log=True`"),
        ("lora_r: 8\n", 1, "lora_r: expected {choices: [A, B, ...]} or {low: A, high: B}"),
    ],
)  # fmt: skip
def test_a_bad_search_space_is_one_line_naming_its_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, line: int, message: str
) -> None:
    path = space(tmp_path, text)
    with pytest.raises(SystemExit) as exit:
        main(["sweep", str(TINY_CONFIG), "--search_space", str(path), "--output_dir", str(tmp_path / "out")])
    assert exit.value.code == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"finetune sweep: error: {path}:{line}: {message}")
    assert not (tmp_path / "out").exists(), "refused before anything is written"


def test_a_search_space_key_in_either_checkpointing_spelling_is_searched_under_the_installed_one(
    tmp_path: Path,
) -> None:
    parser = make_parser()
    for other, installed in installed_names(parser).items():
        searched = load_search_space(space(tmp_path, f"{other}: {{choices: [true, false]}}\n"), parser)
        assert list(searched) == [installed], "the best config then sets the key the preset's value is parsed into"
        both = space(tmp_path, f"{installed}: {{choices: [true]}}\n{other}: {{choices: [false]}}\n")
        with pytest.raises(FinetuneError, match=rf"^{both}:2: {other} is {installed}, searched already$"):
            load_search_space(both, parser)


def test_a_searched_key_given_as_a_flag_and_launch_flags_are_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["sweep", str(TINY_CONFIG), "--learning-rate", "0.1"])
    assert capsys.readouterr().err.strip() == (
        "finetune sweep: error: --learning_rate is searched "
        f"({finetune.sweep.SPACES_DIR / 'default.yaml'}): drop the flag, or the key from the search space"
    )
    with pytest.raises(SystemExit):
        main(["sweep", str(TINY_CONFIG), "--num_processes", "2"])
    assert "--num_processes and --accelerate_config are for train, " in capsys.readouterr().err
