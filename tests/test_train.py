"""`finetune train`: configs, the completion-only training text, the loss, the best adapter, resuming."""

import json
import logging
import math
import shutil
import warnings
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import transformers
from packaging.version import Version
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, get_quantization_config

from finetune import FinetuneError
from finetune.benchmark import TRAIN_TASK, load_tasks
from finetune.config import installed_names, make_parser, parse_train_args, presets
from finetune.model import base_config
from finetune.train import compute_dtype, loading_args, trainer_for
from lm_eval_tasks.tweet_sentiment.utils import macro_f1

TINY_CONFIG = Path(__file__).parent / "tiny.yaml"


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text(TINY_CONFIG.read_text() + "lora_rank: 8\n")
    line = len(TINY_CONFIG.read_text().splitlines()) + 1
    with pytest.raises(FinetuneError, match=rf"{config}:{line}: unknown key lora_rank \(did you mean lora_r\?\)"):
        parse_train_args([str(config)])


def test_a_config_without_use_peft_is_refused_before_any_model_loads(tmp_path: Path) -> None:
    config = tmp_path / "full.yaml"
    config.write_text(TINY_CONFIG.read_text().replace("use_peft: true\n", ""))
    with pytest.raises(FinetuneError, match=f"{config}: .*use_peft: true"):
        parse_train_args([str(config)])


def test_without_the_validation_loss_the_best_checkpoint_needs_another_metric(tmp_path: Path) -> None:
    config = tmp_path / "no-metric.yaml"  # the Trainer's default for load_best_model_at_end is the loss
    config.write_text(TINY_CONFIG.read_text().replace("metric_for_best_model: macro_f1\n", ""))
    with pytest.raises(FinetuneError, match=f"{config}: validation_loss: false leaves no loss .* macro_f1$"):
        parse_train_args([str(config), "--validation_loss", "false"])
    with pytest.raises(FinetuneError, match="validation_loss: false leaves no loss"):
        parse_train_args([str(TINY_CONFIG), "--validation_loss", "false", "--metric_for_best_model", "loss"])
    assert parse_train_args([str(TINY_CONFIG), "--validation_loss", "false"])[0].validation_loss is False


def test_config_flags_override_the_yaml() -> None:
    task_args, sft, model_args = parse_train_args([str(TINY_CONFIG), "--lora_r", "4", "--train_limit", "10"])
    assert (model_args.lora_r, task_args.train_limit, sft.max_steps) == (4, 10, 6)


def checkpointing_names_of_this_transformers() -> dict[str, str]:
    """What `installed_names` should say, from the transformers version alone: 5.23 added `activation_checkpointing*`
    and made the old names its deprecated aliases."""
    new_to_old = {"activation_checkpointing": "gradient_checkpointing",
                  "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs"}  # fmt: skip
    if Version(transformers.__version__) < Version("5.23"):
        return new_to_old
    return {old: new for new, old in new_to_old.items()}


@pytest.mark.parametrize("preset", presets())
def test_each_preset_parses_without_a_deprecation_warning(preset: str, tmp_path: Path) -> None:
    assert installed_names(make_parser()) == checkpointing_names_of_this_transformers()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse_train_args([preset, "--output_dir", str(tmp_path), "--bf16", "false"])  # bf16 is refused on a CPU
    assert not [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]


@pytest.mark.parametrize("spelling", ["activation_checkpointing", "gradient_checkpointing"])
def test_activation_checkpointing_in_either_spelling_reaches_the_installed_transformers(
    spelling: str, tmp_path: Path
) -> None:
    declared = {field.name for field in fields(SFTConfig)}
    installed = "activation_checkpointing" if "activation_checkpointing" in declared else "gradient_checkpointing"
    config = tmp_path / "checkpointing.yaml"
    config.write_text(
        TINY_CONFIG.read_text().replace("activation_checkpointing: false\n", "")
        + f"{spelling}: true\n{spelling}_kwargs:\n  use_reentrant: false\n"
    )
    sft = parse_train_args([str(config)])[1]
    assert getattr(sft, installed) is True and getattr(sft, f"{installed}_kwargs") == {"use_reentrant": False}
    assert getattr(parse_train_args([str(config), f"--{spelling}", "false"])[1], installed) is False
    assert getattr(parse_train_args([str(TINY_CONFIG), f"--{spelling}=true"])[1], installed) is True
    dashed = f"--{spelling.replace('_', '-')}"  # the parser's other spelling of a flag
    assert getattr(parse_train_args([str(TINY_CONFIG), dashed, "true"])[1], installed) is True


def test_presets_are_found_by_name() -> None:
    _, sft, model_args = parse_train_args(["llama-3.1-8b-qlora"])
    assert model_args.load_in_4bit and model_args.bnb_4bit_quant_type == "nf4" and sft.fp16
    with pytest.raises(FinetuneError, match="embedded-cpu-quick"):
        parse_train_args(["no-such-preset"])


@pytest.fixture
def tiny_trainer(tiny_model_dir: Path, tmp_path: Path):
    """The trainer `finetune train tests/tiny.yaml` would run on the tiny model."""
    task_args, sft, model_args = parse_train_args(
        [str(TINY_CONFIG), "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path)]
    )
    return trainer_for(task_args, sft, model_args)


def test_training_text_is_the_task_prompt_with_only_the_answer_and_eos_in_the_loss(tiny_trainer) -> None:
    trainer = tiny_trainer
    tokenizer = trainer.processing_class
    doc = load_tasks([TRAIN_TASK])[TRAIN_TASK].training_docs()[0]
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    answer = [i for i, label in enumerate(labels) if label != -100]
    prompt_ids = ids[: answer[0]]
    assert tokenizer.decode(prompt_ids) == load_tasks([TRAIN_TASK])[TRAIN_TASK].doc_to_text(doc)
    assert tokenizer.decode([ids[i] for i in answer]) == " " + doc["label_text"] + tokenizer.eos_token
    assert answer == list(range(answer[0], len(ids))), "the answer is one run of tokens at the end"
    assert all(labels[i] == ids[i] for i in answer)


def test_on_a_cpu_the_loss_scores_only_the_answer_positions_and_equals_the_full_cross_entropy(
    tiny_trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trl.trainer import utils as trl_utils

    trainer, scored = tiny_trainer, []
    head = trl_utils._ChunkedLogProbFunction.apply

    def counted(hidden: torch.Tensor, *rest):  # trl's own head, its rows counted
        scored.append(hidden.shape[0])
        return head(hidden, *rest)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counted)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        fused = trainer.compute_loss(trainer.model, dict(batch))
        full = trainer.model(**batch).loss  # the model's own loss over every position's full logits
    assert scored == [int((batch["labels"][:, 1:] != -100).sum())], "the answer and EOS positions, not every position"
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-6)


def test_loss_is_finite_and_falls(tiny_adapter_dir: Path) -> None:
    history = json.loads((tiny_adapter_dir / "train_log.json").read_text())
    losses = [row["loss"] for row in history if "loss" in row]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert (tiny_adapter_dir / "training_loss.png").stat().st_size > 0


def test_the_saved_adapter_is_the_checkpoint_with_the_best_validation_macro_f1(tiny_adapter_dir: Path) -> None:
    state = json.loads((tiny_adapter_dir / "checkpoint-6" / "trainer_state.json").read_text())
    evals = {row["step"]: row["eval_macro_f1"] for row in state["log_history"] if "eval_macro_f1" in row}
    assert sorted(evals) == [3, 6]
    best_step = next(step for step in sorted(evals) if evals[step] == max(evals.values()))  # ties keep the first
    assert Path(state["best_model_checkpoint"]).name == f"checkpoint-{best_step}"
    saved = load_file(tiny_adapter_dir / "adapter_model.safetensors")
    kept = load_file(tiny_adapter_dir / f"checkpoint-{best_step}" / "adapter_model.safetensors")
    assert saved.keys() == kept.keys()
    assert all(torch.equal(saved[k], kept[k]) for k in saved)


def test_without_validation_loss_the_checkpoints_are_still_picked_by_validation_macro_f1(
    tiny_model_dir: Path, tiny_adapter_dir: Path, train_tiny, tmp_path: Path
) -> None:
    adapter = train_tiny(tiny_model_dir, tmp_path / "run", "--validation_loss", "false")
    state = json.loads((adapter / "checkpoint-6" / "trainer_state.json").read_text())
    evals = [row for row in state["log_history"] if "eval_macro_f1" in row]
    assert [row["step"] for row in evals] == [3, 6] and not any("eval_loss" in row for row in evals)
    with_loss = json.loads((tiny_adapter_dir / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    assert [row["eval_macro_f1"] for row in evals] == [row["eval_macro_f1"] for row in with_loss if "eval_loss" in row]
    best = max(evals, key=lambda row: row["eval_macro_f1"])  # max keeps the first of a tie, as the Trainer does
    assert Path(state["best_model_checkpoint"]).name == f"checkpoint-{best['step']}"


def test_validation_macro_f1_is_the_benchmarks_multiple_choice_answer_on_the_validation_rows(
    tiny_adapter_dir: Path, tiny_model_dir: Path, label_logliks
) -> None:
    """Each checkpoint's logged score, recomputed by a plain forward pass over the 16 validation rows of tiny.yaml."""
    state = json.loads((tiny_adapter_dir / "checkpoint-6" / "trainer_state.json").read_text())
    docs = list(load_tasks([TRAIN_TASK])[TRAIN_TASK].validation_docs())[:16]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for row in (r for r in state["log_history"] if "eval_macro_f1" in r):
        checkpoint = tiny_adapter_dir / f"checkpoint-{row['step']}"
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), checkpoint)
        answers = [scores.index(max(scores)) for scores in label_logliks(model, tokenizer, [d["text"] for d in docs])]
        assert row["eval_macro_f1"] == pytest.approx(macro_f1([(d["label"], a) for d, a in zip(docs, answers)]))


def test_resume_continues_from_the_last_checkpoint(
    tiny_model_dir: Path, train_tiny, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    train_tiny(tiny_model_dir, out, "--max_steps", "3")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="transformers.trainer"):
        train_tiny(tiny_model_dir, out, "--max_steps", "6", "--resume", "true")
    assert f"Loading model from {out / 'checkpoint-3'}" in caplog.text
    steps = [row["step"] for row in json.loads((out / "train_log.json").read_text()) if "loss" in row]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_length_grouped_run_resumed_in_its_second_epoch_ends_with_the_uninterrupted_adapter(
    tiny_model_dir: Path, train_tiny, tmp_path: Path
) -> None:
    """The order of an epoch must not depend on what the run did before it (transformers' length-grouped sampler
    draws it from the global generator, which a resumed run has not advanced through the earlier epochs)."""
    run = ["--max_steps", "10", "--train_sampling_strategy", "group_by_length", "--eval_strategy", "no",
           "--save_strategy", "steps", "--save_steps", "1", "--load_best_model_at_end", "false"]  # fmt: skip
    whole = train_tiny(tiny_model_dir, tmp_path / "whole", *run)
    stopped = tmp_path / "stopped"  # 64 rows in batches of 16: step 6 is the middle of the second epoch
    shutil.copytree(whole / "checkpoint-6", stopped / "checkpoint-6")
    resumed = train_tiny(tiny_model_dir, stopped, *run, "--resume", "true")
    expected, got = (load_file(folder / "adapter_model.safetensors") for folder in (whole, resumed))
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)


def test_the_adapter_names_its_base_as_the_user_did_and_keeps_how_it_was_loaded(
    tiny_adapter_dir: Path, tiny_model_dir: Path
) -> None:
    assert json.loads((tiny_adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny_model_dir
    )
    model_args = json.loads((tiny_adapter_dir / "model_args.json").read_text())
    assert (model_args["model_name_or_path"], model_args["load_in_4bit"], model_args["lora_r"]) == (
        str(tiny_model_dir),
        False,
        8,
    )


def test_evaluate_loads_4_bit_bases_as_the_qlora_preset_trains_them() -> None:
    _, sft, preset = parse_train_args(["llama-3.1-8b-qlora"])
    preset = loading_args(preset, compute_dtype(sft))
    scoring = base_config("meta-llama/Llama-3.1-8B-Instruct", "float16", load_in_4bit=True)
    assert get_quantization_config(scoring).to_dict() == get_quantization_config(preset).to_dict()
