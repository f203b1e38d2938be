"""Several processes through accelerate, on CPU (gloo): `--num-processes 2` trains one adapter with the
configured effective batch, and evaluation and labeling spread their rows yet answer as one process does."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trl import get_quantization_config

from finetune import FinetuneError
from finetune.cli import main
from finetune.data import load_task
from finetune.evaluate import evaluate
from finetune.launch import split_launch_args
from finetune.model import base_config
from finetune.train import shard_4bit_weights

TINY_CONFIG = Path(__file__).parent / "tiny.yaml"
ROWS = 9  # odd: the two processes get unequal shares


def finetune(*args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "finetune.cli", *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def two_process_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ddp") / "adapter"
    run = finetune("train", str(TINY_CONFIG), "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out),
                   "--num-processes", "2")  # fmt: skip
    return out, run.stdout


def test_two_processes_train_one_adapter_with_the_effective_batch_they_announce(two_process_run) -> None:
    adapter, stdout = two_process_run
    assert stdout.count("effective batch 32 = 16 per device x 2 processes x 1 accumulation") == 1
    assert stdout.splitlines()[-1] == str(adapter), "only the first process prints"
    history = json.loads((adapter / "train_log.json").read_text())
    steps = [row for row in history if "loss" in row]
    # 64 training rows, 32 a step: each step is half an epoch, so the processes saw different rows
    assert [row["epoch"] for row in steps] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert all(math.isfinite(row["loss"]) for row in steps) and steps[-1]["loss"] < steps[0]["loss"]
    for name in ("adapter_model.safetensors", "adapter_config.json", "model_args.json", "training_loss.png"):
        assert (adapter / name).stat().st_size > 0


def test_evaluation_over_two_processes_answers_every_row_as_one_process(
    two_process_run, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter, _ = two_process_run
    finetune("evaluate", "--base", str(tiny_model_dir), "--adapter", str(adapter), "--limit", str(ROWS),
             "--num-processes", "2", "--out", str(tmp_path))  # fmt: skip
    alone = evaluate(base_config(str(tiny_model_dir)), [str(adapter)], limit=ROWS)
    spread = json.loads((tmp_path / "answers.json").read_text())
    assert spread == json.loads(json.dumps(alone.pairs)), "the same (gold, answer) on every row of every variant"
    assert json.loads((tmp_path / "metrics.json").read_text())["results"] == alone.results


def test_labeling_over_two_processes_gives_each_row_its_one_process_label(
    two_process_run, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter, _ = two_process_run
    docs = list(load_task("tweet_sentiment_mc").test_docs())[:ROWS]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))
    spread, alone = tmp_path / "spread.jsonl", tmp_path / "alone.jsonl"
    finetune("predict", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--input", str(source),
             "--output", str(spread), "--num-processes", "2")  # fmt: skip
    main(["predict", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--input", str(source),
          "--output", str(alone)])  # fmt: skip
    rows = [[json.loads(line) for line in path.read_text().splitlines()] for path in (spread, alone)]
    assert [r["id"] for r in rows[0]] == [d["id"] for d in docs]
    assert [r["prediction"] for r in rows[0]] == [r["prediction"] for r in rows[1]]
    assert [r["confidence"] for r in rows[0]] == pytest.approx([r["confidence"] for r in rows[1]], abs=2e-4)


def test_launch_flags_are_taken_out_of_the_command_each_process_runs() -> None:
    launch, rest = split_launch_args(["train", "cfg.yaml", "--num_processes", "4", "--lora_r", "8",
                                      "--accelerate-config", "ddp"])  # fmt: skip
    assert (launch.num_processes, launch.accelerate_config, rest) == (4, "ddp", ["train", "cfg.yaml", "--lora_r", "8"])


def test_launch_flags_are_refused_for_commands_of_one_process(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["merge", "--adapter", "a", "--out", "b", "--num-processes", "2"])
    assert "--num-processes and --accelerate-config are for train, evaluate, predict, demo" in capsys.readouterr().err


def test_an_unknown_accelerate_config_is_named(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--accelerate-config", "no-such", "--out", "x"])
    assert exit_.value.code == 2
    assert "no accelerate config file 'no-such' and no shipped one of that name (ddp, fsdp_qlora)" in (
        capsys.readouterr().err
    )


def test_fsdp_qlora_packs_the_4_bit_weights_in_bf16_and_refuses_fp16() -> None:
    model_args = base_config("meta-llama/Llama-3.1-8B-Instruct", "bfloat16", load_in_4bit=True)
    shard_4bit_weights(model_args)
    assert get_quantization_config(model_args).bnb_4bit_quant_storage == torch.bfloat16
    with pytest.raises(FinetuneError, match=r"FSDP \+ QLoRA trains in bf16 here, not float16: pass --bf16 true"):
        shard_4bit_weights(base_config("meta-llama/Llama-3.1-8B-Instruct", "float16", load_in_4bit=True))
