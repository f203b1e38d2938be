"""Where results land: each is written into a temporary sibling and renamed into place, so a crash leaves the
old result or the new one, never half of either; an existing result is replaced only when the user says so."""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from finetune import FinetuneError


class OutputExists(FinetuneError):
    """A result is already where a new one would go, and the user did not ask to replace it."""


def is_used(dest: Path) -> bool:
    return dest.is_file() or (dest.is_dir() and any(dest.iterdir()))


def check_output(dest: Path, overwrite: bool = False, flag: str = "--overwrite", folder: bool = True) -> None:
    """Refuse, before any work, a destination that holds something (unless `overwrite`) or cannot be written:
    the check makes and removes a real sibling, which also catches read-only file systems and a file in the way.
    Folders it had to make for the check are removed again: a refused run leaves nothing behind."""
    dest = Path(dest)
    if not folder and dest.is_dir():
        raise FinetuneError(f"{dest}: a folder; name the file to write")
    if is_used(dest) and not overwrite:
        kind = "folder is not empty" if dest.is_dir() else "file exists"
        raise OutputExists(f"{dest}: the {kind}; pass {flag} to replace it")
    blocking = next((parent for parent in dest.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise FinetuneError(f"{dest}: cannot write there ({blocking} is a file, not a folder)")
    made = [parent for parent in dest.parents if not parent.exists()]  # innermost first
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent)).rmdir()
    except OSError as err:
        raise FinetuneError(f"{dest}: cannot write there ({err.strerror}: {err.filename})") from None
    finally:
        for parent in made:
            with contextlib.suppress(OSError):
                parent.rmdir()


def replace_with(staging: Path, dest: Path) -> None:
    """Put `staging` where `dest` is: a file in one atomic rename; a folder by moving the old one aside first,
    so that at every moment `dest` is either the old result or the new one."""
    if staging.is_file() or not dest.exists():
        os.replace(staging, dest)
        return
    old = set_aside(dest)
    os.replace(staging, dest)
    shutil.rmtree(old.parent)


def set_aside(dest: Path) -> Path:
    """Move `dest` into a new hidden sibling folder (same file system, so a rename) and return its new path."""
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent)) / dest.name
    os.replace(dest, old)
    return old


def move_into(staging: Path, dest: Path) -> None:
    """Rename each file of `staging` into the existing folder `dest`: one atomic rename per file, for a folder
    that must stay where it is (a training run's, whose checkpoints `--resume` finds there)."""
    for entry in staging.iterdir():
        os.replace(entry, dest / entry.name)
    staging.rmdir()


@contextlib.contextmanager
def written(dest: Path, overwrite: bool = False, folder: bool = True) -> Iterator[Path]:
    """A temporary sibling of `dest` (a folder or a file) to write the result into; it takes `dest`'s place
    when the block ends, and is removed if the block fails."""
    dest = Path(dest)
    check_output(dest, overwrite, folder=folder)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(handle)
        staging = Path(name)
    staging.chmod((0o777 if folder else 0o666) & ~current_umask())
    try:
        yield staging
    except BaseException:
        if staging.is_dir():
            shutil.rmtree(staging)
        else:
            staging.unlink(missing_ok=True)
        raise
    replace_with(staging, dest)


def current_umask() -> int:
    """mkdtemp and mkstemp make private paths; results get the permissions any new file of the user gets."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
