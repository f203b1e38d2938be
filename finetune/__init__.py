"""Fine-tune causal LMs with LoRA / QLoRA on the text the tweet_sentiment benchmark scores."""

from lm_eval_tasks.finetune_entry import name_clash

if (_clash := name_clash()) is not None:  # PyPI's unrelated `finetune` shares this import name
    raise ImportError(_clash)


class FinetuneError(Exception):
    """A problem the user can fix (a file, a name, a flag), told in one line: `finetune` prints it and exits 2
    without a traceback, while Python callers can catch it like any other error."""

    exit_code = 2


def first_line(err: BaseException) -> str:
    """What a library's error says first (huggingface_hub's and datasets' run to many lines), or its type."""
    said = str(err).strip()
    return said.splitlines()[0] if said else type(err).__name__


def os_error(err: OSError) -> str:
    """An OSError as a user reads it in one line: the path, then the system's reason."""
    return f"{err.filename}: {err.strerror or first_line(err)}"
