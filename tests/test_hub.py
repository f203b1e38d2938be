"""`finetune push` publishes an adapter to the Hub in one commit, with a card holding its results;
`finetune evaluate --adapter OWNER/NAME` scores it from there. The Hub is `hub_server.HubServer`, a real HTTP
server on 127.0.0.1; the client is huggingface_hub's own `HfApi`, pointed at it."""

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from hub_server import HubServer
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from finetune.benchmark import TASK_GROUP, load_tasks
from finetune.evaluate import evaluate
from finetune.hub import (
    ADAPTER_PATTERNS,
    HubError,
    model_card,
    publish_files,
    push,
    read_adapter,
    report_results,
    upload,
)
from finetune.model import base_config, merge
from finetune.report import read_training_log, write_report
from lm_eval_tasks.tweet_sentiment.utils import DATA_DIR, FULL_DATA_ENV

TOKEN, USER = "test-token", "tester"
SPREAD_JOB = Path(__file__).parent / "spread_job.py"
# what an adapter repo holds: weights and config, how the base was loaded, the tokenizer, the loss curve
ADAPTER_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "model_args.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_loss.png",
)


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    """The server, with this process's huggingface_hub allowed online for the module (the suite runs offline)."""
    with HubServer({TOKEN: USER}) as server, pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield server


@pytest.fixture(scope="module")
def api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.url, token=TOKEN)


FULL_GROUP = "tweet_sentiment_full"


@pytest.fixture(scope="module")
def full_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the source's test split (mteb layout), for the `_full` variants: other rows than the pinned."""
    folder = tmp_path_factory.mktemp("source")
    (folder / "test.jsonl").write_text("".join(reversed((DATA_DIR / "test.jsonl").read_text().splitlines(True))))
    return folder


@pytest.fixture(scope="module")
def report(
    tiny_model_dir: Path, tiny_adapter_dir: Path, full_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A real `finetune evaluate` report of the local adapter on the pinned and the full variants: what
    `push --report_dir` publishes."""
    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FULL_DATA_ENV, str(full_data))
        tasks = load_tasks([TASK_GROUP, FULL_GROUP])
    write_report(evaluate(base_config(str(tiny_model_dir)), [str(tiny_adapter_dir)], tasks, limit=4), out)
    return out


def model_index(card: ModelCard | str) -> list[dict]:
    """The card's model-index as the Hub reads it: its YAML header, not huggingface_hub's objects."""
    return yaml.safe_load(str(card).split("---\n")[1])["model-index"]


def logits(folder: Path, adapter: Path | None = None) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(folder)
    model = PeftModel.from_pretrained(model, adapter) if adapter else model
    with torch.no_grad():
        return model(input_ids=torch.arange(1, 40).unsqueeze(0)).logits


# What is published.


def test_a_push_is_one_commit_of_what_users_need(
    api: HfApi, hub: HubServer, tiny_model_dir: Path, tiny_adapter_dir: Path, report: Path, tmp_path: Path
) -> None:
    url = push(api, tiny_adapter_dir, f"{USER}/tiny-adapter", report=report)
    (commit,) = hub.pushed(f"{USER}/tiny-adapter")
    assert url == f"{hub.url}/{USER}/tiny-adapter/commit/{commit.oid}"
    assert set(commit.files) == {".gitattributes", "README.md", *ADAPTER_FILES}
    folder = Path(api.snapshot_download(f"{USER}/tiny-adapter", local_dir=tmp_path))
    torch.testing.assert_close(logits(tiny_model_dir, folder), logits(tiny_model_dir, tiny_adapter_dir), rtol=0, atol=0)
    published = ModelCard.load(folder / "README.md")
    splits = {r["dataset"]["split"]: {m["config"] for m in r["metrics"]} for r in model_index(published)[0]["results"]}
    assert splits == {
        "test[pinned-300][:4]": {"tweet_sentiment_gen", "tweet_sentiment_mc"},
        "test[:4]": {"tweet_sentiment_gen_full", "tweet_sentiment_mc_full"},
    }, "pinned and full scores are two entries, each with its own rows"


def test_a_branch_and_a_private_repo(api: HfApi, hub: HubServer, tiny_adapter_dir: Path) -> None:
    push(api, tiny_adapter_dir, f"{USER}/on-a-branch", private=True, revision="v2")
    repo = hub.repos[f"{USER}/on-a-branch"]
    (commit,) = hub.pushed(f"{USER}/on-a-branch")
    assert repo.private and repo.branches["v2"] == commit.oid
    assert set(repo.resolve("main").files) == {".gitattributes"}
    card = commit.files["README.md"].decode()
    assert "branch `v2`" in card and "hf download tester/on-a-branch --revision v2 --local-dir on-a-branch-v2\n" in card
    assert ",peft=on-a-branch-v2\n" in card, "lm-eval reads the branch from the download: its revision= is the base's"
    assert "--adapter tester/on-a-branch@v2\n" in card, "finetune evaluate names the adapter's branch itself"


def test_private_is_refused_for_a_repo_that_exists_and_is_public(
    api: HfApi, hub: HubServer, tiny_adapter_dir: Path
) -> None:
    push(api, tiny_adapter_dir, f"{USER}/public")
    with pytest.raises(HubError, match=f"^{USER}/public exists and is public, which --private does not change"):
        push(api, tiny_adapter_dir, f"{USER}/public", private=True)
    assert len(hub.pushed(f"{USER}/public")) == 1


def test_merged_model_is_published_instead_of_the_adapter(
    api: HfApi, tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    push(api, tiny_adapter_dir, f"{USER}/merged", merged=True)
    folder = Path(api.snapshot_download(f"{USER}/merged", local_dir=tmp_path / "hub"))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "adapter_config.json").exists()
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers" and f"--model_args pretrained={USER}/merged\n" in card.text
    local = merge(base_config(str(tiny_model_dir), "bfloat16"), str(tiny_adapter_dir), tmp_path / "here")
    torch.testing.assert_close(logits(folder), logits(local), rtol=0, atol=0)


def test_only_the_adapter_tokenizer_curve_and_base_settings_are_selected(tiny_adapter_dir: Path) -> None:
    assert any(tiny_adapter_dir.glob("checkpoint-*")) and (tiny_adapter_dir / "training_args.bin").exists()
    assert publish_files(tiny_adapter_dir, ADAPTER_PATTERNS) == sorted(ADAPTER_FILES)


def test_the_card_carries_the_reported_numbers_and_how_to_reproduce_them(
    tiny_model_dir: Path, tiny_adapter_dir: Path, report: Path
) -> None:
    config, model_args = read_adapter(tiny_adapter_dir)
    results = report_results(report, tiny_adapter_dir)
    card = model_card("me/tiny", config, model_args, read_training_log(tiny_adapter_dir), results, False, None)
    assert card.data.library_name == "peft" and card.data.datasets == ["mteb/tweet_sentiment_extraction"]
    assert card.data.base_model is None, "a local folder is no Hub id"
    published = {(r.metric_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert published == {
        (variant, kind): results["adapter"][variant][key]
        for variant in sorted(results["rows"])
        for key, kind in (("acc", "accuracy"), ("macro_f1", "f1"))
    }
    assert sorted(results["rows"]) == ["tweet_sentiment_gen", "tweet_sentiment_gen_full", "tweet_sentiment_mc",
                                       "tweet_sentiment_mc_full"]  # fmt: skip
    assert {(r.dataset_split, r.dataset_revision, r.dataset_args["rows"]) for r in card.data.eval_results} == {
        ("test[pinned-300][:4]", "d604517c81ca91fe16a244d1248fc021f9ecee7a", 4),
        ("test[:4]", "d604517c81ca91fe16a244d1248fc021f9ecee7a", 4),
    }
    before, after = results["base"]["tweet_sentiment_gen"]["acc"], results["adapter"]["tweet_sentiment_gen"]["acc"]
    assert f"| tweet_sentiment_gen | {before:.3f} → {after:.3f} |" in card.text
    assert f"--model_args pretrained={tiny_model_dir},peft=me/tiny\n" in card.text
    assert f"finetune evaluate --model_name_or_path {tiny_model_dir} --adapter me/tiny\n" in card.text
    assert "| LoRA rank r | 8 |" in card.text


def test_pinned_and_full_scores_are_distinct_model_index_entries_that_round_trip_through_huggingface_hub(
    tiny_adapter_dir: Path, report: Path, tmp_path: Path
) -> None:
    """A report of all 300 pinned rows and all 3,534 test rows (written here: scoring them takes too long): the Hub
    parser must read back two entries, the pinned sample's not claiming the whole test split, each metric with its
    own value, rows and sample."""
    metrics = json.loads((report / "metrics.json").read_text())
    rows = {"tweet_sentiment_gen": 300, "tweet_sentiment_mc": 300, "tweet_sentiment_gen_full": 3534,
            "tweet_sentiment_mc_full": 3534}  # fmt: skip
    names = metrics["results"]["base"]["tweet_sentiment_gen"]
    values = {variant: {m: i / 10 + j / 100 for j, m in enumerate(names)} for i, variant in enumerate(rows)}
    metrics.update(rows=rows, results={name: values for name in metrics["results"]})
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    config, model_args = read_adapter(tiny_adapter_dir)
    results = report_results(tmp_path, tiny_adapter_dir)
    card = model_card("me/tiny", config, model_args, [], results, False, None)

    name, parsed = model_index_to_eval_results(model_index(card))
    assert name == "tiny"
    assert {(r.metric_config, r.metric_type): r.metric_value for r in parsed} == {
        (variant, kind): values[variant][key]
        for variant in rows
        for key, kind in (("acc", "accuracy"), ("macro_f1", "f1"))
    }
    entries = {
        (r.task_name, r.dataset_type, r.dataset_split, r.dataset_args["rows"], r.dataset_args["sample"]) for r in parsed
    }
    assert entries == {
        ("tweet_sentiment", "mteb/tweet_sentiment_extraction", "test[pinned-300]", 300,
         "the pinned 300-row stratified sample of test"),
        ("tweet_sentiment_full", "mteb/tweet_sentiment_extraction", "test", 3534, "the whole test split"),
    }  # fmt: skip
    for result in parsed:
        full = result.metric_config.endswith("_full")
        assert result.dataset_split == ("test" if full else "test[pinned-300]"), result.metric_config
    assert len(model_index(card)[0]["results"]) == 2
    assert {(r.metric_config, r.metric_type, r.metric_value) for r in ModelCard(str(card)).data.eval_results} == {
        (r.metric_config, r.metric_type, r.metric_value) for r in parsed
    }, "the card object huggingface_hub loads holds the same results"


def test_a_card_for_the_embedded_base_links_its_upstream_model() -> None:
    config = {"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "r": 8}
    model_args = {"model_name_or_path": "embedded", "load_in_4bit": True}
    card = model_card("me/smol", config, model_args, [], None, False, None)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "Q4_1 GGUF of HuggingFaceTB/SmolLM2-135M-Instruct" in card.text
    assert "pretrained=$(finetune model-path embedded),peft=me/smol" in card.text
    assert "finetune evaluate --model_name_or_path embedded --adapter me/smol --load_in_4bit" in card.text


def test_a_card_names_regex_target_modules_and_the_base_revision_the_adapter_was_trained_on() -> None:
    config = {"base_model_name_or_path": "org/base", "r": 8, "target_modules": r"model\.layers\.2\d\..*_proj"}
    model_args = {"model_name_or_path": "org/base", "model_revision": "v1", "load_in_4bit": False}
    card = model_card("me/ad", config, model_args, [], None, False, None)
    assert "| target modules | `model\\.layers\\.2\\d\\..*_proj` |" in card.text, "peft keeps a regex as one string"
    assert "finetune evaluate --model_name_or_path org/base --adapter me/ad --model_revision v1\n" in card.text
    assert "trained on the base at revision `v1`" in card.text
    listed = model_card("me/ad", {**config, "target_modules": ["v_proj", "q_proj"]}, model_args, [], None, False, None)
    assert "| target modules | q_proj, v_proj |" in listed.text
    assert "rank-stabilized" not in listed.text


def test_a_card_table_keeps_a_regex_with_alternatives_in_one_cell_and_says_the_adapter_is_rank_stabilized() -> None:
    config = {"base_model_name_or_path": "org/base", "r": 256, "use_rslora": True, "target_modules": r".*(q|v)_proj"}
    card = model_card("me/ad", config, {"model_name_or_path": "org/base"}, [], None, False, None)
    assert "| target modules | `.*(q\\|v)_proj` |" in card.text
    assert "| rank-stabilized (scale lora_alpha / √r) | True |" in card.text


# Refusals: each says what is wrong in one line, and nothing is committed.


def test_without_a_token_nothing_is_sent(
    hub: HubServer, tiny_adapter_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    seen = len(hub.requests)
    with pytest.raises(HubError, match=r"^no Hugging Face token: set HF_TOKEN or run `hf auth login` \(nothing"):
        push(HfApi(endpoint=hub.url), tiny_adapter_dir, f"{USER}/no-token")
    assert hub.requests[seen:] == []


def test_a_report_without_this_adapter_is_refused(api: HfApi, tiny_adapter_dir: Path, report: Path, tmp_path: Path):
    metrics = json.loads((report / "metrics.json").read_text())
    (tmp_path / "metrics.json").write_text(json.dumps({**metrics, "adapters": {"other": "/elsewhere/other"}}))
    with pytest.raises(HubError, match=f"^{tmp_path / 'metrics.json'} has no results for adapter {tiny_adapter_dir}"):
        push(api, tiny_adapter_dir, f"{USER}/x", report=tmp_path)


def test_a_report_names_an_adapter_by_its_folder_name_only_when_its_folders_are_not_here(
    api: HfApi, tiny_adapter_dir: Path, report: Path, tmp_path: Path
) -> None:
    namesake = shutil.copytree(tiny_adapter_dir, tmp_path / "elsewhere" / tiny_adapter_dir.name)  # another run
    with pytest.raises(HubError, match="has no results for adapter"):
        push(api, namesake, f"{USER}/namesake", report=report)
    metrics = json.loads((report / "metrics.json").read_text())
    moved = {name: f"/made/on/another/machine/{Path(path).name}" for name, path in metrics["adapters"].items()}
    (tmp_path / "metrics.json").write_text(json.dumps({**metrics, "adapters": moved}))
    assert push(api, namesake, f"{USER}/namesake", report=tmp_path)


def test_a_namespace_the_token_may_not_write_to(api: HfApi, hub: HubServer, tiny_adapter_dir: Path) -> None:
    with pytest.raises(HubError) as refused:
        push(api, tiny_adapter_dir, "someone-else/tiny")
    message = str(refused.value)
    assert message.startswith("push to someone-else/tiny failed: the Hub answered 403: this token may not write there")
    assert message.endswith("no commit was made") and "\n" not in message
    assert "someone-else/tiny" not in hub.repos


def test_an_unreachable_hub(hub: HubServer, tiny_adapter_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(HubError, match=rf"^push to {USER}/tiny failed: could not reach {endpoint} \(ConnectError"):
        push(HfApi(endpoint=endpoint, token=TOKEN), tiny_adapter_dir, f"{USER}/tiny")


# The round trip: the CLI of a user with the Hub scores the published adapter as the local one scored.


def test_evaluate_from_the_hub_reproduces_the_published_numbers(
    api: HfApi,
    hub: HubServer,
    tiny_model_dir: Path,
    tiny_adapter_dir: Path,
    report: Path,
    full_data: Path,
    tmp_path: Path,
) -> None:
    push(api, tiny_adapter_dir, f"{USER}/round-trip", report=report)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=TOKEN)
    env[FULL_DATA_ENV] = str(full_data)
    out = tmp_path / "from-hub"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune.cli",
            "evaluate",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--adapter",
            f"{USER}/round-trip",
            "--tasks",
            TASK_GROUP,
            FULL_GROUP,
            "--limit",
            "4",
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    from_hub = json.loads((out / "metrics.json").read_text())
    assert from_hub["adapters"] == {f"{USER}/round-trip": f"{USER}/round-trip"}
    assert from_hub["results"][f"{USER}/round-trip"] == report_results(report, tiny_adapter_dir)["adapter"]


def test_evaluate_scores_the_adapter_on_the_branch_that_id_at_revision_names(
    api: HfApi, hub: HubServer, tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    stronger = shutil.copytree(tiny_adapter_dir, tmp_path / "stronger")  # another adapter: LoRA's update x20
    weights = load_file(stronger / "adapter_model.safetensors")
    save_file({k: w * 20 if "lora_B" in k else w for k, w in weights.items()}, stronger / "adapter_model.safetensors")
    push(api, tiny_adapter_dir, f"{USER}/two-versions")
    push(api, stronger, f"{USER}/two-versions", revision="v2")
    here = evaluate(
        base_config(str(tiny_model_dir)), [str(tiny_adapter_dir), str(stronger)], load_tasks([TASK_GROUP]), limit=4
    )
    assert here.results["tiny-adapter"] != here.results["stronger"], "the two adapters must score apart"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=TOKEN)
    out, main, branch = tmp_path / "from-hub", f"{USER}/two-versions", f"{USER}/two-versions@v2"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune.cli",
            "evaluate",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--adapter",
            main,
            "--adapter",
            branch,
            "--limit",
            "4",
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    from_hub = json.loads((out / "metrics.json").read_text())
    assert from_hub["adapters"] == {main: main, branch: branch}, "one row per revision, each named with it"
    assert from_hub["results"][main] == here.results["tiny-adapter"]
    assert from_hub["results"][branch] == here.results["stronger"]


def test_merge_and_push_merged_fold_the_adapter_into_its_base_at_the_revision_it_was_trained_on(
    api: HfApi, hub: HubServer, tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    later = tmp_path / "later"  # a later revision of the base: the same shapes, other weights
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for weight in model.parameters():
            weight.mul_(1.5)
    model.save_pretrained(later)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, later / name)
    files = lambda folder: [CommitOperationAdd(p.name, str(p)) for p in folder.iterdir() if p.is_file()]  # noqa: E731
    upload(api, f"{USER}/base", files(later), private=False, revision=None)  # main moved on
    upload(api, f"{USER}/base", files(tiny_model_dir), private=False, revision="v1")
    adapter = shutil.copytree(tiny_adapter_dir, tmp_path / "adapter")  # as if trained on tester/base at v1
    for name, key, value in (
        ("adapter_config.json", "base_model_name_or_path", f"{USER}/base"),
        ("model_args.json", "model_name_or_path", f"{USER}/base"),
        ("model_args.json", "model_revision", "v1"),
    ):
        settings = json.loads((adapter / name).read_text())
        (adapter / name).write_text(json.dumps({**settings, key: value}))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=TOKEN)
    merge_command = ["merge", "--model_name_or_path", f"{USER}/base", "--model_revision", "v1", "--adapter",
                     str(adapter), "--output_dir", str(tmp_path / "merged")]  # fmt: skip
    push_command = ["push", "--adapter", str(adapter), "--repo_id", f"{USER}/merged-v1", "--merged"]
    commands = json.dumps([merge_command, push_command])  # one after the other, in one interpreter of the user's
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, str(SPREAD_JOB), commands], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    pushed = Path(api.snapshot_download(f"{USER}/merged-v1", local_dir=tmp_path / "pushed"))
    expected = merge(base_config(str(tiny_model_dir), "bfloat16"), str(tiny_adapter_dir), tmp_path / "expected")
    for folder in (tmp_path / "merged", pushed):
        torch.testing.assert_close(logits(folder), logits(expected), rtol=0, atol=0)
    assert not torch.allclose(logits(expected).float(), logits(later, tiny_adapter_dir), atol=1e-2), "main differs"
