"""A run going wrong is stopped: the base is scored first (step 0), and a run whose validation answers score below
it or collapse onto one label, getting no better, at two evaluations in a row stops with its best checkpoint and one
line saying what to try. Recipes name "the top blocks" by a share of the base's depth, and a LoRA target that
matches nothing is one line."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune.cli import main

TINY_CONFIG = Path(__file__).parent / "tiny.yaml"
# An absurd learning rate on the tiny model: evaluations at steps 3, 6 and 9
ABSURD = ["--learning_rate", "50", "--max_steps", "9", "--divergence_guard", "true"]


def run(tiny_model_dir: Path, out: Path, *flags: str) -> None:
    main(["train", str(TINY_CONFIG), "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), *flags])


def test_the_guard_stops_a_diverging_run_keeping_its_best_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "absurd"
    with pytest.raises(SystemExit) as exit:
        run(tiny_model_dir, out, *ABSURD)
    assert exit.value.code == 3
    line = capsys.readouterr().err.strip().splitlines()[-1]
    history = json.loads((out / "train_log.json").read_text())
    base = next(row for row in history if row["step"] == 0 and "eval_macro_f1" in row)
    evals = {row["step"]: row["eval_macro_f1"] for row in history if row["step"] > 0 and "eval_macro_f1" in row}
    assert sorted(evals) == [3, 6], "stopped after its second bad evaluation, not at step 9"
    best = max(sorted(evals), key=lambda step: evals[step])
    assert line.startswith(f"finetune train: error: {out}: stopped at step 6 of 9: ")
    assert "and no better, 2 evaluations in a row" in line and ("below the base's" in line or "collapsed onto" in line)
    assert line.endswith(
        f"kept the best checkpoint (checkpoint-{best}, validation macro-F1 {evals[best]:.3f}) as the adapter; "
        "try a lower --learning_rate (this run's: 50) or `finetune sweep` (--divergence_guard false trains on "
        "regardless)"
    )
    judged = [row for row in history if row["step"] in evals and "eval_macro_f1" in row]
    assert all(row["eval_macro_f1"] < base["eval_macro_f1"] or row["eval_top_label_share"] >= 0.9 for row in judged)
    assert any("divergence_guard" in row for row in history), "train_log.json says why the run stopped"
    saved = load_file(out / "adapter_model.safetensors")
    kept = load_file(out / f"checkpoint-{best}" / "adapter_model.safetensors")
    for key in saved:  # equal_nan: at this learning rate the weights may hold NaN, equal to NaN here
        torch.testing.assert_close(saved[key], kept[key], rtol=0, atol=0, equal_nan=True)

    main(["evaluate", "--model_name_or_path", str(tiny_model_dir), "--adapter", str(out), "--limit", "4",
          "--tasks", "tweet_sentiment_mc", "--output_dir", str(tmp_path / "report")])  # fmt: skip
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert any(w.startswith("absurd: its training was stopped by the divergence guard: ") for w in report["warnings"])


def test_without_the_guard_the_same_run_trains_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    run(tiny_model_dir, tmp_path / "unguarded", *ABSURD, "--divergence_guard", "false")
    history = json.loads((tmp_path / "unguarded" / "train_log.json").read_text())
    assert [row["step"] for row in history if "eval_macro_f1" in row] == [3, 6, 9], "no step 0 without the guard"


def test_lora_on_the_top_share_of_the_blocks_counts_from_the_bases_depth(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "top"
    run(tiny_model_dir, out, "--lora_top_layers", "0.5", "--max_steps", "1", "--eval_strategy", "no",
        "--save_strategy", "no", "--load_best_model_at_end", "false")  # fmt: skip
    layers = {key.split(".layers.")[1].split(".")[0] for key in load_file(out / "adapter_model.safetensors")}
    assert layers == {"1"}, "the tiny Llama has 2 blocks: the top half is block 1"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1] and set(config["target_modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lora_target_modules", "qkv"], "lora_target_modules 'qkv': Target modules qkv not found in the base model"),
        (["--lora_top_layers", "1.5"], "lora_top_layers 1.5: a share of the blocks, above 0 and at most 1"),
        (
            ["--lora_top_layers", "0.5", "--lora_target_modules", r"model\.layers\.1\..*"],
            "lora_top_layers takes module names or all-linear as lora_target_modules, not the pattern",
        ),
    ],
)
def test_lora_targets_that_match_nothing_are_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit:
        run(tiny_model_dir, tmp_path / "run", *flags)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err.strip().splitlines()[-1]


class Logged:
    """What the guard uses of the trainer: the last scores' label and the log."""

    def __init__(self) -> None:
        self.last_scores, self.logs = {"top_label": "neutral"}, []

    def log(self, logs: dict) -> None:
        self.logs.append(logs)


@pytest.mark.parametrize(
    ("scores", "stops_at"),
    [
        ([(0.25, 0.5), (0.19, 0.6), (0.19, 0.6)], 2),  # below the base and no better: the run of issue 21
        ([(0.30, 0.5), (0.35, 0.5), (0.40, 0.5), (0.60, 0.4)], None),  # below the base, but climbing
        ([(0.50, 0.95), (0.50, 0.95), (0.50, 0.95)], 3),  # above the base, but on one label and no better, twice
        ([(0.30, 0.5), (0.50, 0.4), (0.30, 0.5), (0.60, 0.4)], None),  # one bad evaluation at a time
    ],
)
def test_the_guard_judges_two_evaluations_in_a_row_against_the_base(
    scores: list[tuple[float, float]], stops_at: int | None
) -> None:
    from transformers import TrainerControl, TrainerState

    from finetune.guard import DivergenceGuard

    guard, state, control = DivergenceGuard(Logged()), TrainerState(), TrainerControl()
    state.log_history = [{"eval_macro_f1": 0.45, "step": 0}]  # the base, as a resumed run finds it
    guard.on_train_begin(None, state, control)
    for evaluation, (f1, share) in enumerate(scores, start=1):
        state.global_step = evaluation * 10
        guard.on_evaluate(None, state, control, {"eval_macro_f1": f1, "eval_top_label_share": share})
        if control.should_training_stop:
            break
    assert (evaluation if control.should_training_stop else None) == stops_at
    assert (guard.reason is not None) == (stops_at is not None)


@pytest.mark.parametrize(
    ("metric", "named"),
    [("macro_f1", "validation macro-F1"), ("eval_macro_f1", "validation macro-F1"), ("eval_loss", "eval_loss"),
     ("loss", "eval_loss")],
)  # fmt: skip
def test_the_kept_checkpoint_is_named_with_the_metric_that_picked_it(metric: str, named: str, tmp_path: Path) -> None:
    """The 8B presets keep the checkpoint of lowest validation loss: its line must not call that loss a macro-F1."""
    from transformers import TrainingArguments

    from finetune.guard import best_by

    assert best_by(TrainingArguments(output_dir=str(tmp_path), metric_for_best_model=metric)) == named
