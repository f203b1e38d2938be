"""`finetune tasks-path --link`: an opt-in, reversible way for plain `lm_eval --tasks tweet_sentiment` to find the
task, by links in lm-eval's own task folder (lm-eval 0.4.13 has no plugin mechanism for tasks); no lm-eval code is
changed."""

from pathlib import Path

from finetune import FinetuneError
from finetune.benchmark import TASK_GROUP, tasks_path

# The folder `finetune tasks-path --link` makes inside lm-eval's own task folder (named after this project, so it
# cannot clash with a task folder lm-eval ships).
LINK_FOLDER = "tweet_sentiment_lm"


def lm_eval_task_folder() -> Path:
    """lm-eval's built-in task folder: the one its TaskManager indexes when no --include_path is given."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def task_files() -> list[Path]:
    """Our YAML files: what `--link` links, and what a linked task folder must hold."""
    return sorted((tasks_path() / TASK_GROUP).glob("*.yaml"))


def linked_folder(root: Path) -> Path:
    """`root/LINK_FOLDER`, refused if something there is not a link of ours (it is never overwritten)."""
    folder = root / LINK_FOLDER
    ours = tasks_path() / TASK_GROUP
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise FinetuneError(f"{folder} is not a folder made by `finetune tasks-path --link`; remove it yourself")
    strangers = [p for p in folder.glob("*") if not (p.is_symlink() and p.resolve().parent == ours)]
    if strangers:
        raise FinetuneError(f"{folder} holds {strangers[0].name}, which is not ours; remove the folder yourself")
    return folder


def link_tasks(root: Path | None = None) -> Path:
    """Let plain `lm_eval --tasks tweet_sentiment` find the task: a folder in lm-eval's task folder with a link to each
    of our YAML files. lm-eval indexes `**/*.yaml` without entering linked folders, so the folder is real; it reads
    a linked file from where the link points, so includes and `!function utils.*` resolve beside our real files."""
    folder = linked_folder(root or lm_eval_task_folder())
    try:
        folder.mkdir(exist_ok=True)
        for config in task_files():
            link = folder / config.name
            link.unlink(missing_ok=True)
            link.symlink_to(config)
    except OSError as err:
        raise FinetuneError(f"cannot link the task into {folder.parent}: {err.strerror}") from None
    return folder


def is_linked(root: Path | None = None) -> bool:
    """Whether lm-eval's task folder holds a link to each of our YAML files: lm-eval then indexes the task by itself,
    and an `--include_path` of ours would register every task a second time ("overrides existing task" warnings)."""
    folder = (root or lm_eval_task_folder()) / LINK_FOLDER
    return all((folder / c.name).is_symlink() and (folder / c.name).resolve() == c.resolve() for c in task_files())


def include_path(root: Path | None = None) -> str:
    """What `lm_eval --include_path "$(finetune tasks-path)"` should get: our task folder, or nothing once the task is
    linked, so that the one documented command works, without warnings, whether or not the user ran `--link`."""
    return "" if is_linked(root) else str(tasks_path())


def unlink_tasks(root: Path | None = None) -> Path | None:
    """Undo `link_tasks`: remove the links and their folder, and nothing else; None where nothing was linked."""
    folder = linked_folder(root or lm_eval_task_folder())
    if not folder.exists():
        return None
    try:
        for link in folder.glob("*"):
            link.unlink()
        folder.rmdir()
    except OSError as err:
        raise FinetuneError(f"cannot remove {folder}: {err.strerror}") from None
    return folder
