"""The `finetune` command's entry point, and the check behind it, kept outside the `finetune` package.

PyPI's `finetune` (an unrelated TensorFlow library, 0.10.0) has the same import name. Where both are installed,
`import finetune` reaches whichever files were written last, or a mix of the two (both ship `finetune/__init__.py`,
`config.py`, `model.py`), and fails with errors that name neither package, such as `No module named 'tensorflow'`
or `No module named 'finetune.cli'`. This module can be imported and run before `finetune` is: the command checks
first, and `finetune/__init__.py` runs the same check on import."""

import importlib.metadata
import sys
from pathlib import Path

PROJECT = "tweet-sentiment-lm"
OTHER = "finetune"  # the PyPI distribution that shares our import name


def install_hint(extra: str = "") -> str:
    """How to (re)install this project as it is installed here: from the checkout it runs from (a source tree, with
    setup.cfg beside the packages: `pip install -e`), or as a package (a wheel in site-packages)."""
    suffix = f"[{extra}]" if extra else ""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "setup.cfg").is_file():
        return f"pip install -e '{checkout}{suffix}'"
    return f"pip install '{PROJECT}{suffix}'"


def name_clash() -> str | None:
    """One line saying what to do when PyPI's unrelated `finetune` is installed in this environment, else None."""
    try:
        other = importlib.metadata.distribution(OTHER)
    except importlib.metadata.PackageNotFoundError:
        return None
    reinstall = install_hint().replace("pip install ", "pip install --force-reinstall --no-deps ", 1)
    return (
        f"PyPI's unrelated `{OTHER}` {other.version} is installed in this environment and has this project's import "
        f"name `finetune`: `pip uninstall {OTHER}`, then reinstall this project ({reinstall}), or give {PROJECT} "
        "a virtual environment of its own"
    )


def main() -> int | None:
    """`finetune ...`: the check, then the command."""
    problem = name_clash()
    if problem:
        print(f"finetune: error: {problem}", file=sys.stderr)
        return 2
    from finetune.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
