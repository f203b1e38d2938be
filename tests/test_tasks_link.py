"""`finetune tasks-path --link`: plain `lm_eval --tasks tweet_sentiment` (no --include_path) finds, validates and runs
the task, and `--unlink` takes that back, with no change to lm-eval's code; the documented
`lm_eval --include_path "$(finetune tasks-path)"` stays free of "overrides existing task" warnings either way."""

import os
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest

import finetune.task_link as task_link
from finetune import FinetuneError
from finetune.benchmark import tasks_path
from finetune.cli import main
from finetune.task_link import LINK_FOLDER, link_tasks, unlink_tasks

ROOT = Path(__file__).resolve().parents[1]
TASKS = "tweet_sentiment,tweet_sentiment_gen,tweet_sentiment_mc,tweet_sentiment_full"
OVERRIDES = "overrides existing task"


@pytest.fixture
def shadow_site(tmp_path: Path) -> Path:
    """An lm_eval package of links to the installed one, but for a real task folder of links to each of its entries:
    the link is made there, never in the shared install, and lm-eval, which indexes `**/*.yaml` without entering
    linked folders, sees only what is at that folder's top level (so each command takes seconds, not a minute)."""
    real = Path(lm_eval.__file__).parent
    package = tmp_path / "site" / "lm_eval"
    (package / "tasks").mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name != "tasks":
            (package / entry.name).symlink_to(entry)
    for entry in (real / "tasks").iterdir():
        (package / "tasks" / entry.name).symlink_to(entry)
    return tmp_path / "site"


def run(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=site)


def test_link_lets_plain_lm_eval_list_validate_and_run_the_task_and_unlink_takes_it_back(
    shadow_site: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    tasks = shadow_site / "lm_eval" / "tasks"
    monkeypatch.setattr(task_link, "lm_eval_task_folder", lambda: tasks)  # this process's lm_eval is the shared install
    main(["tasks-path", "--link"])
    assert f"linked: {tasks / LINK_FOLDER}" in capsys.readouterr().out

    listed = run(shadow_site, "lm_eval", "ls", "tasks").stdout
    assert all(name in listed for name in TASKS.split(","))
    validated = run(shadow_site, "lm_eval", "validate", "--tasks", TASKS)
    assert validated.returncode == 0 and "All tasks found and valid" in validated.stdout
    # The README's and the card's `lm_eval --include_path "$(finetune tasks-path)" ...`, once linked: nothing is
    # included, so lm-eval registers each task once; our folder itself would make it warn for every task.
    main(["tasks-path"])
    assert capsys.readouterr().out == "\n"
    scored = run(shadow_site, "lm_eval", "--include_path", "", "--tasks", "tweet_sentiment_mc", "--model", "hf",
                 "--model_args", f"pretrained={tiny_model_dir}", "--device", "cpu", "--limit", "4")  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "tweet_sentiment_mc" in scored.stdout and "macro_f1" in scored.stdout
    assert OVERRIDES not in scored.stderr + scored.stdout
    doubled = run(shadow_site, "lm_eval", "validate", "--tasks", TASKS, "--include_path", str(tasks_path()))
    assert OVERRIDES in doubled.stderr + doubled.stdout, "the check above would see the warning"

    main(["tasks-path", "--unlink"])
    assert not (tasks / LINK_FOLDER).exists()
    validated = run(shadow_site, "lm_eval", "validate", "--tasks", TASKS)
    assert validated.returncode == 1 and "Tasks not found" in validated.stdout
    capsys.readouterr()
    main(["tasks-path"])
    included = capsys.readouterr().out.strip()
    assert included == str(tasks_path())
    documented = run(shadow_site, "lm_eval", "validate", "--tasks", TASKS, "--include_path", included)
    assert documented.returncode == 0 and OVERRIDES not in documented.stderr + documented.stdout
    capsys.readouterr()
    main(["tasks-path", "--unlink"])
    assert capsys.readouterr().out == "nothing to remove: the task is not linked into lm-eval\n"


def test_link_and_unlink_never_touch_what_is_not_theirs(tmp_path: Path) -> None:
    folder = link_tasks(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (ROOT / "lm_eval_tasks" / "tweet_sentiment").glob("*.yaml")
    )
    assert link_tasks(tmp_path) == folder, "linking twice is harmless"
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FinetuneError, match="notes.txt, which is not ours"):
        unlink_tasks(tmp_path)
    assert (folder / "notes.txt").read_text() == "mine"
