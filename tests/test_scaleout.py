"""Several processes through accelerate, on CPU (gloo): `--num_processes 2` trains one adapter with the
configured effective batch, and evaluation and labeling spread their rows yet answer as one process does."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from trl import get_quantization_config

from finetune import FinetuneError
from finetune.benchmark import TASK_GROUP, load_tasks
from finetune.cli import main
from finetune.evaluate import evaluate
from finetune.launch import USE_CPU, split_launch_args
from finetune.model import base_config
from finetune.sampler import StepBalancedSampler, step_balanced_order
from finetune.train import loading_args

TINY_CONFIG = Path(__file__).parent / "tiny.yaml"
SPREAD_JOB = Path(__file__).parent / "spread_job.py"
ROWS = 9  # odd: the two processes get unequal shares


def python(*command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def two_process_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`finetune train --num_processes 2`: the CLI runs itself again under accelerate's launcher; length-grouped,
    so that each step's rows are dealt by `StepBalancedSampler`."""
    out = tmp_path_factory.mktemp("ddp") / "adapter"
    done = python(
        "-m",
        "finetune.cli",
        "train",
        str(TINY_CONFIG),
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--num_processes",
        "2",
        "--train_sampling_strategy",
        "group_by_length",
    )
    return out, done.stdout


@pytest.fixture(scope="module")
def spread(two_process_run, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Evaluation and labeling of the first ROWS test rows with the adapter, in 2 gloo processes started by
    `accelerate launch` itself (what `--num_processes 2` runs on a machine without a GPU)."""
    adapter, _ = two_process_run
    folder = tmp_path_factory.mktemp("spread")
    paths = {"report": folder / "report", "input": folder / "in.jsonl", "labeled": folder / "labeled.jsonl"}
    docs = list(load_tasks(["tweet_sentiment_mc"])["tweet_sentiment_mc"].test_docs())[:ROWS]
    paths["input"].write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))
    commands = [
        [
            "evaluate",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--adapter",
            str(adapter),
            "--limit",
            str(ROWS),
            "--output_dir",
            str(paths["report"]),
        ],
        [
            "predict",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--adapter",
            str(adapter),
            "--input_file",
            str(paths["input"]),
            "--output_file",
            str(paths["labeled"]),
        ],
    ]
    launch = [
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        "0",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    python(
        "-m",
        "accelerate.commands.launch",
        *launch,
        str(SPREAD_JOB),
        json.dumps(commands),
        env={**os.environ, "ACCELERATE_USE_CPU": "true"},
    )
    return paths


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
    spread: dict[str, Path], two_process_run, tiny_model_dir: Path
) -> None:
    adapter, _ = two_process_run
    alone = evaluate(base_config(str(tiny_model_dir)), [str(adapter)], load_tasks([TASK_GROUP]), limit=ROWS)
    answers = json.loads((spread["report"] / "answers.json").read_text())
    assert answers == json.loads(json.dumps(alone.pairs)), "the same (gold, answer) on every row of every variant"
    assert json.loads((spread["report"] / "metrics.json").read_text())["results"] == alone.results


def test_labeling_over_two_processes_gives_each_row_its_one_process_label_and_score(
    spread: dict[str, Path], two_process_run, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter, _ = two_process_run
    alone = tmp_path / "alone.jsonl"
    main(
        [
            "predict",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--adapter",
            str(adapter),
            "--input_file",
            str(spread["input"]),
            "--output_file",
            str(alone),
        ]
    )
    rows = [[json.loads(line) for line in path.read_text().splitlines()] for path in (spread["labeled"], alone)]
    assert [r["id"] for r in rows[0]] == [json.loads(line)["id"] for line in spread["input"].read_text().splitlines()]
    assert [r["prediction"] for r in rows[0]] == [r["prediction"] for r in rows[1]]
    assert [r["confidence"] for r in rows[0]] == pytest.approx([r["confidence"] for r in rows[1]], abs=2e-4)


def test_launch_flags_are_taken_out_of_the_command_each_process_runs() -> None:
    launch, rest = split_launch_args(
        ["train", "cfg.yaml", "--num_processes", "4", "--lora_r", "8", "--accelerate_config", "ddp"]
    )
    assert (launch.num_processes, launch.accelerate_config, rest) == (4, "ddp", ["train", "cfg.yaml", "--lora_r", "8"])


def test_launch_flags_are_refused_for_commands_of_one_process(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["merge", "--adapter", "a", "--output_dir", "b", "--num_processes", "2"])
    assert "--num_processes and --accelerate_config are for train, evaluate, predict, demo" in capsys.readouterr().err


def test_an_unknown_accelerate_config_is_named(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--accelerate_config", "no-such", "--output_dir", "x"])
    assert exit_.value.code == 2
    assert "no accelerate config file 'no-such' and no shipped one of that name (ddp, fsdp_qlora)" in (
        capsys.readouterr().err
    )


LAUNCHER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)  # torch's elastic agent's


def test_a_shipped_accelerate_config_alone_runs_one_process_a_gpu(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped configs name no number of processes (accelerate's launcher would demand one): one a GPU, or
    one process on a machine without."""
    monkeypatch.setenv(USE_CPU, "true")  # what the launch sets here, without a GPU: unset again after the test
    report = tmp_path / "report"
    handlers = {number: signal.getsignal(number) for number in LAUNCHER_SIGNALS}
    try:
        main(["evaluate", "--model_name_or_path", str(tiny_model_dir), "--accelerate_config", "ddp",
              "--tasks", "tweet_sentiment_mc", "--limit", "2", "--output_dir", str(report)])  # fmt: skip
    finally:  # the launcher's own handlers outlive it, here in the test's process (a command's process ends there)
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert json.loads((report / "metrics.json").read_text())["rows"] == {"tweet_sentiment_mc": 2}


def test_fsdp_qlora_packs_the_4_bit_weights_in_bf16_and_refuses_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    parsed = base_config("meta-llama/Llama-3.1-8B-Instruct", "float32", load_in_4bit=True)
    loading = loading_args(parsed, "bfloat16")
    assert get_quantization_config(loading).bnb_4bit_quant_storage == torch.bfloat16
    assert (parsed.dtype, parsed.bnb_4bit_quant_storage) == ("float32", None), "the parsed config is left as given"
    with pytest.raises(FinetuneError, match=r"FSDP \+ QLoRA trains in bf16 here, not float16: pass --bf16 true"):
        loading_args(parsed, "float16")


LENGTHS = torch.randint(12, 200, (2048,), generator=torch.Generator().manual_seed(0)).tolist()


def step_cells(sampler, per_device: int, processes: int) -> list[list[int]]:
    """Each step's padded batch sizes (rows x longest row) per process, dealt as accelerate deals the Trainer's
    batches."""
    shards = [
        BatchSamplerShard(BatchSampler(sampler, per_device, drop_last=False), processes, rank)
        for rank in range(processes)
    ]
    return [[len(b) * max(LENGTHS[i] for i in b) for b in step] for step in zip(*shards, strict=True)]


def test_on_one_process_the_balanced_order_is_transformers_length_grouped_order() -> None:
    torch.manual_seed(1)
    expected = get_length_grouped_indices(LENGTHS, 32, mega_batch_mult=8)
    torch.manual_seed(1)
    assert step_balanced_order(LENGTHS, 32, 1, mega_batch_mult=8) == expected


def test_the_length_grouped_order_follows_the_seed_and_the_epoch_not_the_global_generator() -> None:
    sampler = StepBalancedSampler(LengthGroupedSampler(32, lengths=LENGTHS), 32, 1, seed=7)
    torch.manual_seed(0)
    first = list(sampler)
    torch.manual_seed(1)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == sorted(first)


def test_balanced_length_groups_give_every_process_batches_as_long_as_the_others_each_step() -> None:
    """transformers' grouping hands a step's processes batches of different lengths; the balanced order does not,
    and pads no more than one process alone would."""
    per_device, processes = 32, 4
    torch.manual_seed(0)
    grouped = LengthGroupedSampler(per_device, lengths=LENGTHS)
    balanced = StepBalancedSampler(grouped, per_device, processes, seed=0)
    assert sorted(balanced) == list(range(len(LENGTHS))), "every row once an epoch"

    def balance(sampler) -> float:  # mean over slowest padded batch, as a step waits for its slowest process
        steps = step_cells(sampler, per_device, processes)
        return sum(map(sum, steps)) / (processes * sum(map(max, steps)))

    torch.manual_seed(0)
    assert balance(grouped) < 0.9
    torch.manual_seed(0)
    assert balance(balanced) > 0.99
    torch.manual_seed(0)
    alone = sum(map(sum, step_cells(grouped, per_device, 1)))
    torch.manual_seed(0)
    assert sum(map(sum, step_cells(balanced, per_device, processes))) < 1.01 * alone
