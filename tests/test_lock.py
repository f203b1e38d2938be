"""One output, one run: a second run on an output another run is writing is refused in one line that names the
holder; a run killed with `kill -9` leaves its lock to the next run, which takes over with a note and clears up
after it, and leaves the previous result where it was."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune.cli import main
from finetune.outputs import OutputBusy, exclusive, holder_file

TINY_CONFIG = Path(__file__).parent / "tiny.yaml"
REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
LONG_RUN = ["--max_steps", "100000", "--eval_strategy", "no", "--save_strategy", "no"]


def finetune(*args: str, stderr: Path) -> subprocess.Popen:
    with stderr.open("w") as err:  # a file, not a pipe: nobody reads the progress bars while the test waits
        return subprocess.Popen([sys.executable, "-m", "finetune.cli", *args], stderr=err, env=ENV)


def wait_for(found, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not found():
        assert process.poll() is None, f"the first run ended (exit {process.returncode}) before the moment to test"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_a_second_run_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    train = ["train", str(TINY_CONFIG), "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out)]
    first = finetune(*train, *LONG_RUN, stderr=tmp_path / "first.txt")
    try:
        wait_for(holder_file(out).exists, first)
        first.send_signal(signal.SIGSTOP)  # frozen mid-run: it holds the output, and leaves the CPU to the others
        holder = json.loads(holder_file(out).read_text())
        with pytest.raises(SystemExit) as refused:
            main(train)
        assert refused.value.code == 2
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder["started"]))
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"finetune train: error: {out}: another run is writing it (pid {first.pid} on {socket.gethostname()}, "
            f"started {started}); wait for it to end, or choose another output"
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)

    main([*train, "--overwrite", "true", "--max_steps", "2"])
    assert f"{out}: taking over from a run that is gone (pid {first.pid} on {socket.gethostname()}" in caplog.text
    assert (out / "adapter_model.safetensors").is_file() and not holder_file(out).exists()


def test_kill_9_while_a_report_is_written_leaves_the_old_one_and_the_next_run_starts(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    report = tmp_path / "report"
    evaluate = ["evaluate", "--model_name_or_path", str(tiny_model_dir), "--tasks", "tweet_sentiment_mc",
                "--limit", "4", "--output_dir", str(report), "--overwrite"]  # fmt: skip
    main(evaluate)
    old = {path.name: path.read_bytes() for path in report.iterdir()}

    killed = finetune(*evaluate, stderr=tmp_path / "killed.txt")
    wait_for(lambda: any(path.is_dir() for path in tmp_path.glob(".report.*.tmp")), killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert {path.name: path.read_bytes() for path in report.iterdir()} == old, "the old report, untouched"
    assert list(tmp_path.glob(".report.*.tmp")), "the killed run's staging is left behind"

    main(evaluate)
    assert f"{report}: taking over from a run that is gone (pid {killed.pid}" in caplog.text
    assert not list(tmp_path.glob(".report.*.tmp")), "its staging cleared"
    assert (report / "metrics.json").is_file()


def test_a_result_set_aside_by_a_killed_run_is_put_back(tmp_path: Path) -> None:
    """`kill -9` between the two renames that replace a folder leaves it set aside; the next run puts it back."""
    dest, aside = tmp_path / "merged", tmp_path / ".merged.old.abcd1234"
    (aside / "merged").mkdir(parents=True)
    (aside / "merged" / "model.safetensors").write_text("last week's model")
    (tmp_path / ".merged.k2j4h5g6.tmp").mkdir()  # the new result it was writing
    holder_file(dest).write_text(json.dumps({"pid": 999_999_999, "host": socket.gethostname(), "started": 0}))
    with exclusive(dest):
        assert (dest / "model.safetensors").read_text() == "last week's model"
        assert sorted(path.name for path in tmp_path.iterdir()) == ["merged"], "the lock is kept apart"
    assert not holder_file(dest).exists()


def test_the_same_process_cannot_take_an_output_twice(tmp_path: Path) -> None:
    with exclusive(tmp_path / "out"):
        with pytest.raises(OutputBusy, match=rf"^{tmp_path / 'out'}: another run is writing it \(pid {os.getpid()} "):
            with exclusive(tmp_path / "out"):
                pass
