"""`finetune push` publishes an adapter to the Hub in one commit, with a card holding its results;
`finetune evaluate --adapter OWNER/NAME` scores it from there.

The Hub is `hub_server.HubServer`, a real HTTP server on 127.0.0.1. The client side (finetune's CLI,
huggingface_hub, peft, transformers) runs in a separate Python process, `HubClient`, because those
libraries read HF_ENDPOINT and HF_HUB_OFFLINE when imported, and this process imported them offline
(conftest). One client process serves many commands, so its imports are paid once.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from huggingface_hub import ModelCard
from peft import PeftModel
from transformers import AutoModelForCausalLM

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token"
USER = "tester"
LIMIT = "4"  # rows per variant: enough for real numbers, quick on the tiny model
MARK = "@@hub-client@@ "

# The client process: one JSON request per stdin line, one JSON answer per stdout line. Whatever the
# libraries print goes to stderr; what the CLI prints is captured and sent back.
CLIENT = f"""
import contextlib, io, json, os, sys
for module in sys.argv[1:]:
    __import__(module)
answers, sys.stdout = sys.stdout, sys.stderr
for line in sys.stdin:
    request = json.loads(line)
    saved = {{name: os.environ.get(name) for name in request["env"]}}
    for name, value in request["env"].items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    printed, answer = io.StringIO(), {{"exit": None, "error": None}}
    try:
        with contextlib.redirect_stdout(printed):
            if request["call"] == "cli":
                from finetune.cli import main
                main(request["argv"])
            else:
                from huggingface_hub import snapshot_download
                print(snapshot_download(**request["kwargs"]))
    except SystemExit as exc:
        answer["exit"] = str(exc.code)
    except Exception as exc:
        answer["error"] = f"{{type(exc).__name__}}: {{exc}}"
    for name, value in saved.items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    answer["stdout"] = printed.getvalue()
    answers.write({MARK!r} + json.dumps(answer) + "\\n")
    answers.flush()
"""


@dataclass
class Outcome:
    stdout: str
    exit: str | None  # the SystemExit message, if the command exited that way
    error: str | None  # "Type: message" of any other exception

    @property
    def ok(self) -> bool:
        return self.exit in (None, "0") and self.error is None


class HubClient:
    """A Python process whose huggingface_hub talks to `endpoint`, with its own empty HF_HOME."""

    def __init__(self, endpoint: str, workdir: Path, preload: tuple[str, ...] = ("finetune.cli",), **env: str) -> None:
        self.workdir = workdir
        environment = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        environment.update(
            HF_ENDPOINT=endpoint,
            HF_HOME=str(workdir / "hf-home"),
            HF_TOKEN=TOKEN,
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_DATASETS_OFFLINE="1",  # the task's data is local; only models come from the Hub
            **env,
        )
        self.stderr = open(workdir / "client.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLIENT, *preload],
            cwd=REPO_ROOT,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )

    def cli(self, *argv: object, env: dict[str, str | None] | None = None) -> Outcome:
        """`finetune ARGV...`, run through finetune.cli.main."""
        return self._ask({"call": "cli", "argv": [str(a) for a in argv], "env": env or {}})

    def download(self, repo: str, local_dir: Path, revision: str | None = None) -> Path:
        outcome = self._ask(
            {
                "call": "download",
                "kwargs": {"repo_id": repo, "local_dir": str(local_dir), "revision": revision},
                "env": {},
            }
        )
        assert outcome.ok, outcome
        return Path(outcome.stdout.strip())

    def _ask(self, request: dict) -> Outcome:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(MARK):
                return Outcome(**json.loads(line[len(MARK) :]))
        raise RuntimeError(f"the client process died:\n{(self.workdir / 'client.log').read_text()[-3000:]}")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.stderr.close()


@pytest.fixture(scope="module")
def workdir() -> Path:
    with tempfile.TemporaryDirectory(prefix="hub-test-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def hub() -> HubServer:
    with HubServer(tokens={TOKEN: USER}) as server:
        yield server


@pytest.fixture(scope="module")
def client(hub: HubServer, workdir: Path) -> HubClient:
    """Starts importing lm-eval at once, while the tiny adapter is trained in this process."""
    (workdir / "client").mkdir()
    process = HubClient(hub.url, workdir / "client", preload=("finetune.cli", "finetune.evaluate"))
    yield process
    process.close()


@pytest.fixture(scope="module")
def report(client: HubClient, tiny_model_dir: Path, tiny_adapter_dir: Path, workdir: Path) -> Path:
    """A real `finetune evaluate` report of the local adapter: what `push --report` publishes."""
    out = workdir / "report"
    outcome = client.cli(
        "evaluate", "--base", tiny_model_dir, "--adapter", tiny_adapter_dir, "--limit", LIMIT, "--out", out
    )
    assert outcome.ok, outcome
    return out


@dataclass
class Published:
    repo: str
    printed: str
    folder: Path  # the repo as snapshot_download fetched it


@pytest.fixture(scope="module")
def published(client: HubClient, hub: HubServer, tiny_adapter_dir: Path, report: Path, workdir: Path) -> Published:
    repo = f"{USER}/tiny-adapter"
    outcome = client.cli("push", "--adapter", tiny_adapter_dir, "--repo", repo, "--report", report)
    assert outcome.ok, outcome
    return Published(repo, outcome.stdout.strip(), client.download(repo, workdir / "download"))


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.arange(1, 40).unsqueeze(0)).logits


def with_adapter(base: Path, adapter: Path) -> torch.Tensor:
    return logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter))


def adapter_metrics(report: Path) -> dict[str, dict[str, float]]:
    """The results of the one adapter in a report."""
    metrics = json.loads((report / "metrics.json").read_text())
    (name,) = metrics["adapters"]
    return metrics["results"][name]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Publishing.


def test_pushed_adapter_downloads_and_gives_the_same_logits(
    published: Published, tiny_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    from_hub = with_adapter(tiny_model_dir, published.folder)
    torch.testing.assert_close(from_hub, with_adapter(tiny_model_dir, tiny_adapter_dir), rtol=0, atol=0)


def test_a_push_is_one_commit_of_what_users_need(published: Published, hub: HubServer, tiny_adapter_dir: Path) -> None:
    (commit,) = hub.pushed_commits(published.repo)
    assert published.printed == f"{hub.url}/{published.repo}/commit/{commit.oid}"
    assert set(commit.files) == {
        ".gitattributes",  # from the repo's creation
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "training_loss.png",
    }
    assert (
        commit.files["adapter_model.safetensors"].content
        == (tiny_adapter_dir / "adapter_model.safetensors").read_bytes()
    )
    assert any(tiny_adapter_dir.glob("checkpoint-*")) and (tiny_adapter_dir / "training_args.bin").exists()


def test_card_carries_the_reported_numbers(published: Published, report: Path, tiny_model_dir: Path) -> None:
    card = ModelCard.load(published.folder / "README.md")
    assert card.data.library_name == "peft"
    assert card.data.datasets == ["mteb/tweet_sentiment_extraction"]
    assert card.data.pipeline_tag == "text-generation"
    assert card.data.license == "apache-2.0"
    assert {"lora", "peft", "tweet-sentiment", "lm-eval"} <= set(card.data.tags)
    # the base was a local folder, which the Hub does not accept as `base_model` (the server checks)
    assert card.data.base_model is None
    measured = adapter_metrics(report)
    published_numbers = {(r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert published_numbers == {
        (variant, kind): measured[variant][key]
        for variant in ("tweet_sentiment_gen", "tweet_sentiment_mc")
        for key, kind in (("acc", "accuracy"), ("macro_f1", "f1"))
    }
    base = json.loads((report / "metrics.json").read_text())["results"]["base"]
    gen_acc = f"{base['tweet_sentiment_gen']['acc']:.3f} → {measured['tweet_sentiment_gen']['acc']:.3f}"
    assert f"| tweet_sentiment_gen | {gen_acc} |" in card.text
    assert (
        f"lm_eval --include_path $(finetune tasks-path) --tasks tweet_sentiment --model hf "
        f"--model_args pretrained={tiny_model_dir},peft={published.repo}" in card.text
    )
    assert f"finetune evaluate --base {tiny_model_dir} --adapter {published.repo}" in card.text
    assert "| LoRA rank r | 8 |" in card.text


def test_lfs_upload_without_xet(tiny_model_dir: Path, tiny_adapter_dir: Path, report: Path, workdir: Path) -> None:
    """With hf_xet disabled, binary files go through the LFS batch API and a presigned PUT."""
    (workdir / "lfs").mkdir()
    with HubServer(tokens={TOKEN: USER}, lfs=True) as lfs_hub:
        lfs_client = HubClient(lfs_hub.url, workdir / "lfs", HF_HUB_DISABLE_XET="1")
        try:
            outcome = lfs_client.cli("push", "--adapter", tiny_adapter_dir, "--repo", f"{USER}/lfs", "--report", report)
            assert outcome.ok, outcome
            folder = lfs_client.download(f"{USER}/lfs", workdir / "lfs" / "download")
        finally:
            lfs_client.close()
        (commit,) = lfs_hub.pushed_commits(f"{USER}/lfs")
        assert commit.files["adapter_model.safetensors"].lfs and not commit.files["adapter_config.json"].lfs
        assert any(r.path.endswith(".git/info/lfs/objects/batch") for r in lfs_hub.requests)
        assert any(r.method == "PUT" for r in lfs_hub.requests)
    torch.testing.assert_close(
        with_adapter(tiny_model_dir, folder), with_adapter(tiny_model_dir, tiny_adapter_dir), rtol=0, atol=0
    )
    assert ModelCard.load(folder / "README.md").data.eval_results


def test_revision_and_private(client: HubClient, hub: HubServer, tiny_adapter_dir: Path) -> None:
    """--revision commits to that branch (created if needed), leaving main as it was."""
    repo = f"{USER}/on-a-branch"
    assert client.cli("push", "--adapter", tiny_adapter_dir, "--repo", repo, "--revision", "v2", "--private").ok
    stored = hub.repo(repo)
    (commit,) = hub.pushed_commits(repo)
    assert stored.private
    assert stored.branches["v2"] == commit.oid
    assert set(stored.resolve("main").files) == {".gitattributes"}
    assert "branch `v2`" in commit.files["README.md"].content.decode()


def test_merged_model_is_published_instead_of_the_adapter(
    client: HubClient, tiny_model_dir: Path, tiny_adapter_dir: Path, workdir: Path
) -> None:
    from finetune.model import merge

    repo = f"{USER}/merged"
    assert client.cli("push", "--adapter", tiny_adapter_dir, "--repo", repo, "--merged").ok
    folder = client.download(repo, workdir / "merged")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "adapter_config.json").exists()
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers"
    assert f"--model_args pretrained={repo}\n" in card.text
    local = merge(str(tiny_model_dir), str(tiny_adapter_dir), workdir / "merged-here")
    torch.testing.assert_close(
        logits(AutoModelForCausalLM.from_pretrained(folder)),
        logits(AutoModelForCausalLM.from_pretrained(local)),
        rtol=0,
        atol=0,
    )


# Refusals: each says what is wrong in one line, and nothing is published.


def test_without_a_token_nothing_is_sent(client: HubClient, hub: HubServer, tiny_adapter_dir: Path) -> None:
    seen = len(hub.requests)
    outcome = client.cli("push", "--adapter", tiny_adapter_dir, "--repo", f"{USER}/no-token", env={"HF_TOKEN": None})
    assert outcome.exit == "no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing was sent)"
    assert hub.requests[seen:] == []


def test_a_report_without_this_adapter_is_refused(
    client: HubClient, hub: HubServer, tiny_adapter_dir: Path, report: Path, workdir: Path
) -> None:
    other = workdir / "other-report"
    metrics = json.loads((report / "metrics.json").read_text())
    metrics["adapters"] = {"other-adapter": "/elsewhere/other-adapter"}
    other.mkdir()
    (other / "metrics.json").write_text(json.dumps(metrics))
    seen = len(hub.requests)
    outcome = client.cli("push", "--adapter", tiny_adapter_dir, "--repo", f"{USER}/x", "--report", other)
    assert outcome.exit.startswith(f"{other / 'metrics.json'} has no results for adapter {tiny_adapter_dir}")
    assert hub.requests[seen:] == []


def test_a_namespace_the_token_may_not_write_to(client: HubClient, hub: HubServer, tiny_adapter_dir: Path) -> None:
    outcome = client.cli("push", "--adapter", tiny_adapter_dir, "--repo", "someone-else/tiny")
    assert outcome.exit.startswith(
        "push to someone-else/tiny failed: the Hub answered 403: this token may not write there"
    )
    assert outcome.exit.endswith("no commit was made") and "\n" not in outcome.exit
    assert ("model", "someone-else/tiny") not in hub.repos


def test_an_unreachable_hub(tiny_adapter_dir: Path, workdir: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    (workdir / "down").mkdir()
    down = HubClient(endpoint, workdir / "down")
    try:
        outcome = down.cli("push", "--adapter", tiny_adapter_dir, "--repo", f"{USER}/tiny")
    finally:
        down.close()
    assert outcome.exit.startswith(f"push to {USER}/tiny failed: could not reach {endpoint} (ConnectError")
    assert "\n" not in outcome.exit


# Evaluating from the Hub.


def test_evaluate_from_the_hub_reproduces_the_published_numbers(
    client: HubClient, published: Published, report: Path, tiny_model_dir: Path, workdir: Path
) -> None:
    out = workdir / "from-hub"
    outcome = client.cli(
        "evaluate", "--base", tiny_model_dir, "--adapter", published.repo, "--limit", LIMIT, "--out", out
    )
    assert outcome.ok, outcome
    assert json.loads((out / "metrics.json").read_text())["adapters"] == {published.repo: published.repo}
    assert adapter_metrics(out) == adapter_metrics(report)


def test_evaluate_names_a_missing_repo(client: HubClient, tiny_model_dir: Path, workdir: Path) -> None:
    outcome = client.cli(
        "evaluate", "--base", tiny_model_dir, "--adapter", f"{USER}/no-such-adapter", "--out", workdir / "none"
    )
    # raised before anything is scored
    assert outcome.error is None
    assert outcome.exit.startswith(f"no adapter at {USER}/no-such-adapter: not a folder with adapter_config.json")
