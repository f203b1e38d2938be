"""A signal during training (SIGTERM from a preempting scheduler, SIGINT from Ctrl-C) stops at the end of the
step with a checkpoint and a message naming the resume command; the resumed run ends with the very adapter an
uninterrupted run makes. Under several processes, all stop after the same step."""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from finetune.cli import main
from finetune.interrupt import Interrupted, StopOnSignal

TINY_CONFIG = Path(__file__).parent / "tiny.yaml"
REPO = Path(__file__).resolve().parent.parent
# No evaluation or scheduled saves: the only checkpoint is the one the signal asks for.
RUN = ["--max_steps", "6", "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]


def test_sigterm_checkpoints_and_the_named_command_resumes_to_the_uninterrupted_adapter(
    tiny_model_dir: Path, train_tiny, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "finetune.cli", "train", str(TINY_CONFIG), "--model_name_or_path",
               str(tiny_model_dir), "--output_dir", str(out), *RUN]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    stderr = tmp_path / "stderr.txt"  # a file, not a pipe: progress bars must not fill a buffer nobody reads
    with stderr.open("w") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        for line in process.stdout:  # the Trainer prints a log line after each step
            if "'loss'" in line:
                process.send_signal(signal.SIGTERM)
                break
        process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM
    message = stderr.read_text().strip().splitlines()[-1]
    step = int(message.split("after step ")[1].split(" ")[0])
    resume = shlex.join(["finetune", "train", *command[4:], "--resume", "true"])
    assert message == (
        f"finetune train: error: stopped by SIGTERM after step {step} of 6; checkpoint saved in "
        f"{out / f'checkpoint-{step}'}; resume with: {resume}"
    )
    assert step < 6 and not (out / "adapter_model.safetensors").exists(), "no final adapter from a stopped run"

    main(shlex.split(resume)[1:])
    steps = [row["step"] for row in json.loads((out / "train_log.json").read_text()) if "loss" in row]
    assert steps == [1, 2, 3, 4, 5, 6]

    reference = train_tiny(tiny_model_dir, tmp_path / "uninterrupted", *RUN)
    resumed, whole = (load_file(folder / "adapter_model.safetensors") for folder in (out, reference))
    assert resumed.keys() == whole.keys()
    for key in whole:  # same seed, same data order, restored optimizer and RNG: equal on CPU (observed: bitwise)
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=1e-6)


def test_sigint_stops_at_the_step_end_with_a_checkpoint(tiny_model_dir: Path, train_tiny, tmp_path: Path) -> None:
    def press_ctrl_c_once_training_runs() -> None:
        deadline = time.monotonic() + 120
        while not isinstance(getattr(signal.getsignal(signal.SIGINT), "__self__", None), StopOnSignal):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # Python's own, or SIG_IGN where the suite runs in the background
    threading.Thread(target=press_ctrl_c_once_training_runs, daemon=True).start()
    with pytest.raises(Interrupted) as stopped:
        train_tiny(tiny_model_dir, tmp_path / "run", *RUN)
    assert stopped.value.exit_code == 128 + signal.SIGINT
    assert str(stopped.value).startswith("stopped by SIGINT after step ")
    checkpoints = [p.name for p in (tmp_path / "run").glob("checkpoint-*")]
    assert len(checkpoints) == 1 and f"saved in {tmp_path / 'run' / checkpoints[0]};" in str(stopped.value)
    assert signal.getsignal(signal.SIGINT) is before, "Ctrl-C works as it did before the run"


def test_a_signal_reaching_one_of_two_processes_stops_both_after_the_same_step(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "finetune.cli", "train", str(TINY_CONFIG), "--model_name_or_path",
               str(tiny_model_dir), "--output_dir", str(out), *RUN, "--max_steps", "40",
               "--num_processes", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:
        launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        for line in launcher.stdout:  # process 0 logs each step
            if "'loss'" in line:
                second = next(p for p in psutil.Process(launcher.pid).children(recursive=True)
                              if p.environ().get("RANK") == "1")  # fmt: skip
                second.send_signal(signal.SIGTERM)  # as a scheduler's signal that reaches one process first
                break
        try:
            launcher.communicate(timeout=300)
        finally:  # processes that wait for each other forever must not outlive the test
            if launcher.poll() is None:
                for process in [*psutil.Process(launcher.pid).children(recursive=True), launcher]:
                    process.kill()
    said = stderr.read_text()
    assert launcher.returncode == 128 + signal.SIGTERM, said[-2000:]
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1, "both processes saved the same step, once"
    step = int(checkpoints[0].name.split("-")[1])
    assert step < 40 and not (out / "adapter_model.safetensors").exists()
    resume = shlex.join(["finetune", "train", *command[4:-2], "--num_processes", "2", "--resume", "true"])
    message = f"stopped by SIGTERM after step {step} of 40; checkpoint saved in {checkpoints[0]}; resume with: {resume}"
    assert said.count(message) == 1, "said once, by process zero"
