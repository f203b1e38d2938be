"""Where results land: one run at a time on each (a lock beside it), each written into a temporary sibling and
renamed into place, so a crash leaves the old result or the new one, never half of either; an existing result is
replaced only when the user says so."""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from finetune import FinetuneError
from finetune.launch import is_main_process

logger = logging.getLogger(__name__)
# mkdtemp's and mkstemp's random part: a run's staging and set-aside paths are `.NAME.` + it (+ `.tmp`), which
# tells them from another output's (`.NAME.b.` + it, for an output `NAME.b`).
RANDOM = "?" * 8
CACHE_ENV = "FINETUNE_CACHE"


class OutputExists(FinetuneError):
    """A result is already where a new one would go, and the user did not ask to replace it."""


class OutputBusy(FinetuneError):
    """Another run, alive, holds the output."""


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
        staging = staging_folder(dest)
    else:
        handle, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(handle)
        staging = Path(name)
        staging.chmod(0o666 & ~current_umask())
    try:
        yield staging
    except BaseException:
        if staging.is_dir():
            shutil.rmtree(staging)
        else:
            staging.unlink(missing_ok=True)
        raise
    if staging.is_dir():
        as_umask_allows(staging)
    replace_with(staging, dest)


def staging_folder(dest: Path, kind: str = "") -> Path:
    """A new hidden sibling of `dest`, unique to this run, for a result until it is complete."""
    folder = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{kind}", suffix=".tmp", dir=dest.parent))
    folder.chmod(0o777 & ~current_umask())
    return folder


def as_umask_allows(folder: Path) -> None:
    """Every file under `folder` readable as the user's other files are: libraries that write atomically
    (safetensors, through a temporary file) leave theirs private (0600)."""
    mode = 0o666 & ~current_umask()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def current_umask() -> int:
    """mkdtemp and mkstemp make private paths; results get the permissions any new file of the user gets."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cache_dir() -> Path:
    """This tool's own files (the converted embedded model, the outputs' locks), apart from the user's."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "finetune"
    return Path(os.environ.get(CACHE_ENV, default))


def lock_file(dest: Path) -> Path:
    """The lock of an output, by its absolute path, in the cache: beside the output it would outlive every run (an
    flock'd file cannot be removed safely), and a refused or failed run is to leave nothing where it would write."""
    key = hashlib.sha256(str(Path(dest).resolve()).encode()).hexdigest()[:24]
    return cache_dir() / "locks" / f"{key}.lock"


def holder_file(dest: Path) -> Path:
    """Who holds the lock, beside it (filelock truncates the lock file itself whenever anyone opens it)."""
    return lock_file(dest).with_suffix(".json")


def holder_of(dest: Path) -> dict | None:
    try:
        return json.loads(holder_file(dest).read_text())
    except (OSError, ValueError):
        return None


def described(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {started}"


@contextlib.contextmanager
def exclusive(dest: Path) -> Iterator[None]:
    """One run at a time on `dest`, for the whole run: an OS lock beside it (filelock's, which the kernel drops when
    its holder dies, `kill -9` included) and a note of the holder, which a refused run names. A run that finds the
    note of a holder that is gone takes over and clears up after it (`recover`)."""
    dest = Path(dest)
    try:
        lock_file(dest).parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_file(dest), timeout=0)
        lock.acquire()
    except Timeout:
        holder = holder_of(dest)
        who = f" ({described(holder)})" if holder else ""
        raise OutputBusy(
            f"{dest}: another run is writing it{who}; wait for it to end, or choose another output"
        ) from None
    except OSError as err:
        raise FinetuneError(f"{dest}: cannot write there ({err.strerror}: {err.filename})") from None
    try:
        gone = holder_of(dest)
        if gone is not None:
            logger.warning("%s: taking over from a run that is gone (%s)%s", dest, described(gone), recover(dest))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        holder_file(dest).write_text(json.dumps(me))
        try:
            yield
        finally:
            holder_file(dest).unlink(missing_ok=True)
    finally:
        lock.release()


def one_run(dest: Path) -> contextlib.AbstractContextManager:
    """`exclusive(dest)` in the process that writes for all; the others of `accelerate launch` write nothing."""
    return exclusive(dest) if is_main_process() else contextlib.nullcontext()


def recover(dest: Path) -> str:
    """After a run killed while it wrote `dest`: its staging removed; the result it was replacing put back where
    `dest` is missing (killed between the two renames of `replace_with`), else kept aside and named (a training run
    killed after `claim_run_folder`, whose own folder holds the checkpoints that `--resume` continues from)."""
    for staging in [
        *dest.parent.glob(f".{dest.name}.{RANDOM}.tmp"),
        *dest.parent.glob(f".{dest.name}.final.{RANDOM}.tmp"),
    ]:
        shutil.rmtree(staging) if staging.is_dir() else staging.unlink()
    said = ""
    for old in sorted(dest.parent.glob(f".{dest.name}.old.{RANDOM}")):
        if not (old / dest.name).exists():
            continue
        if dest.exists():
            said += f"; the result it was replacing is kept in {old}"
        else:
            os.replace(old / dest.name, dest)
            old.rmdir()
            said += "; the result it was replacing is back in place"
    return said
