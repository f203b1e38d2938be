"""PyPI's unrelated `finetune` (a TensorFlow library) shares this project's import name: where it is installed too,
the command and `import finetune` say so in one line, instead of failing on the other package's files."""

import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_tasks.finetune_entry import install_hint, name_clash

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def other_finetune(tmp_path: Path) -> Path:
    """A folder that, first on the path, installs the other `finetune` 0.10.0: its metadata and its package, whose
    `__init__` imports TensorFlow."""
    info = tmp_path / "finetune-0.10.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: finetune\nVersion: 0.10.0\n")
    (tmp_path / "finetune").mkdir()
    (tmp_path / "finetune" / "__init__.py").write_text("import tensorflow\n")
    return tmp_path


def run(code: list[str], path: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": f"{path}:{ROOT}", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *code], capture_output=True, text=True, env=env, cwd=path)


def test_the_command_names_the_other_package_and_the_fix(other_finetune: Path) -> None:
    done = run(["-m", "lm_eval_tasks.finetune_entry", "--help"], other_finetune)
    assert done.returncode == 2
    assert done.stderr.startswith("finetune: error: PyPI's unrelated `finetune` 0.10.0 is installed in this ")
    assert (
        "`pip uninstall finetune`, then reinstall this project (pip install --force-reinstall --no-deps" in done.stderr
    )
    assert "tensorflow" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_importing_this_finetune_beside_the_other_one_says_why_it_fails(other_finetune: Path) -> None:
    (other_finetune / "finetune" / "__init__.py").unlink()  # this project's package first on the path, the other's
    (other_finetune / "finetune").rmdir()  # metadata still installed: the files of the two may be mixed
    done = run(["-c", "import finetune"], other_finetune)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("ImportError: PyPI's unrelated `finetune` 0.10.0 is installed")


def test_without_the_other_package_nothing_is_said() -> None:
    assert name_clash() is None


def test_the_install_hint_is_an_editable_install_of_a_checkout_and_the_package_otherwise(tmp_path: Path) -> None:
    assert install_hint("gpu") == f"pip install -e '{ROOT}[gpu]'"
    wheel = tmp_path / "site-packages" / "lm_eval_tasks"  # an installed wheel has no setup.cfg beside its packages
    wheel.mkdir(parents=True)
    (wheel / "finetune_entry.py").write_text((ROOT / "lm_eval_tasks" / "finetune_entry.py").read_text())
    done = subprocess.run(
        [sys.executable, "-c", "import finetune_entry; print(finetune_entry.install_hint('gpu'))"],
        capture_output=True,
        text=True,
        cwd=wheel,
    )
    assert done.stdout == "pip install 'tweet-sentiment-lm[gpu]'\n", done.stderr
