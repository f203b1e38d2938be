"""The task under the next lm-eval release: `tests/lm_eval_compat.py` scores the trained tiny adapter on the first
rows of every variant under this interpreter's lm-eval and under the one at $LM_EVAL_NEXT_PYTHON (an environment
with lm-eval 0.5 that `make compat-env` builds and `.ci/run` names), and every row's answer and every score must be
the same. Skipped where the variable is unset; a variable naming a missing interpreter fails."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_tasks.tweet_sentiment.utils import DATA_DIR

NEXT_PYTHON = os.environ.get("LM_EVAL_NEXT_PYTHON")
SCRIPT = Path(__file__).with_name("lm_eval_compat.py")
ROWS = 12

pytestmark = pytest.mark.skipif(not NEXT_PYTHON, reason="LM_EVAL_NEXT_PYTHON unset (`make compat-env` builds one)")


def flat(answer):
    """One row's answer as lm-eval logged it, without the extra list 0.5 wraps each filtered response in."""
    while isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], list):
        answer = answer[0]
    if isinstance(answer, list) and answer and all(isinstance(a, list) and len(a) == 1 for a in answer):
        answer = [a[0] for a in answer]
    return answer


def start(python: str, model_dir: Path, adapter_dir: Path, data_dir: Path, log: Path) -> subprocess.Popen:
    """The script under `python`, started (both interpreters score at once), its stderr in `log`: a file, not a
    pipe, which would stop it while nobody reads."""
    with log.open("w") as stderr:
        return subprocess.Popen(
            [python, str(SCRIPT), str(model_dir), str(adapter_dir), str(ROWS), str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )


def scores(run: subprocess.Popen, log: Path) -> dict[str, dict]:
    """Each variant's line, once the script is done."""
    stdout, _ = run.communicate()
    assert run.returncode == 0, log.read_text()[-3000:]
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {line.pop("variant"): line for line in lines}


def test_every_variant_answers_every_row_alike_under_both_lm_eval_releases(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    assert Path(NEXT_PYTHON).exists(), f"LM_EVAL_NEXT_PYTHON={NEXT_PYTHON}: no such interpreter"
    # the source's layout for the _full and _trainfull variants: other test rows than the pinned variants score
    (tmp_path / "test.jsonl").write_text("".join(reversed((DATA_DIR / "test.jsonl").read_text().splitlines(True))))
    (tmp_path / "train.jsonl").write_text((DATA_DIR / "train.jsonl").read_text()[:20000].rsplit("\n", 1)[0] + "\n")
    logs = [tmp_path / "now.log", tmp_path / "next.log"]
    runs = [
        start(python, tiny_model_dir, tiny_adapter_dir, tmp_path, log)
        for python, log in zip((sys.executable, NEXT_PYTHON), logs)
    ]
    now, nxt = (scores(run, log) for run, log in zip(runs, logs))
    versions = {line.pop("lm_eval") for line in now.values()}, {line.pop("lm_eval") for line in nxt.values()}
    assert versions[0] != versions[1], f"both interpreters have lm-eval {versions[0]}"
    assert sorted(now) == sorted(nxt)
    for variant in now:
        assert nxt[variant]["rows"] == now[variant]["rows"], variant
        assert len(now[variant]["rows"]) == ROWS, variant
        assert nxt[variant]["scores"] == pytest.approx(now[variant]["scores"], abs=1e-12), variant
        answers = [flat(a) for a in now[variant]["answers"]], [flat(a) for a in nxt[variant]["answers"]]
        if variant.endswith(("_mc", "_mc_full")):
            logliks = [[[ll for ll, _ in row] for row in side] for side in answers]
            for row_now, row_next in zip(*logliks, strict=True):
                assert row_next == pytest.approx(row_now, abs=1e-5), variant
        else:
            assert answers[1] == answers[0], variant
    answered = {answer for variant in now.values() for _, answer in variant["rows"]}
    assert len(answered) > 1, "the adapter gives one answer everywhere: the check would compare nothing"
