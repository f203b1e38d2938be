"""End to end through lm-eval itself: its scores are the ones a plain forward pass gives, and its CLI
(`lm_eval --model hf --model_args pretrained=...,peft=...`) and `finetune evaluate` answer every row alike, with
lm-eval's flags for few-shot and chat prompts too."""

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.benchmark import TASK_GROUP, load_tasks, tasks_path
from finetune.cli import main
from finetune.evaluate import evaluate
from finetune.hub import model_card, read_adapter, report_results
from finetune.model import base_config
from lm_eval_tasks.tweet_sentiment.utils import extract_label, macro_f1

ROWS = 12
# A chat template for the tiny tokenizer, which has none: each turn marked with its role, then the answer's turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CHAT_ROWS, SHOTS = 6, 3


@pytest.fixture(scope="module")
def lm_eval_cli(tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path_factory) -> Iterator[tuple[Popen, Path]]:
    """`lm_eval --model hf --model_args pretrained=...,peft=...` on the first rows, and the folder of its files and
    log, started (not waited for)."""
    folder = tmp_path_factory.mktemp("lm_eval_cli")
    cmd = [
        sys.executable, "-m", "lm_eval",
        "--include_path", str(tasks_path()),
        "--tasks", "tweet_sentiment",
        "--model", "hf",
        "--model_args", f"pretrained={tiny_model_dir},peft={tiny_adapter_dir}",
        "--device", "cpu",
        "--batch_size", "16",
        "--limit", str(ROWS),
        "--log_samples",
        "--output_path", str(folder),
    ]  # fmt: skip
    with (folder / "lm_eval.log").open("w") as log, Popen(cmd, stdout=log, stderr=log, cwd=folder) as run:
        yield run, folder


@pytest.fixture(scope="module")
def evaluation(lm_eval_cli: tuple[Popen, Path], tiny_model_dir: Path, tiny_adapter_dir: Path):
    """`finetune evaluate`'s scores of the first rows, in-process, while `lm_eval_cli` runs."""
    return evaluate(base_config(str(tiny_model_dir)), [str(tiny_adapter_dir)], load_tasks([TASK_GROUP]), limit=ROWS)


def test_multiple_choice_answers_are_the_most_likely_label_by_a_plain_forward_pass(
    evaluation, tiny_model_dir: Path, tiny_adapter_dir: Path, label_logliks
) -> None:
    docs = list(load_tasks(["tweet_sentiment_mc"])["tweet_sentiment_mc"].test_docs())[:ROWS]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_adapter_dir)
    answers = [row.index(max(row)) for row in label_logliks(model, tokenizer, [d["text"] for d in docs])]
    pairs = evaluation.pairs["tiny-adapter"]["tweet_sentiment_mc"]
    assert pairs == [(d["label"], a) for d, a in zip(docs, answers)]
    scores = evaluation.results["tiny-adapter"]["tweet_sentiment_mc"]
    assert scores["acc"] == sum(g == a for g, a in pairs) / ROWS
    assert scores["macro_f1"] == pytest.approx(macro_f1(pairs))


def test_generative_answers_are_greedy_generations_read_by_the_label_extractor(
    evaluation, tiny_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    task = load_tasks(["tweet_sentiment_gen"])["tweet_sentiment_gen"]
    docs = list(task.test_docs())[:ROWS]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_adapter_dir)
    answers = []
    for doc in docs:
        ids = tokenizer(task.doc_to_text(doc), return_tensors="pt", add_special_tokens=False)["input_ids"]
        out = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        answers.append(extract_label(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)))
    pairs = evaluation.pairs["tiny-adapter"]["tweet_sentiment_gen"]
    assert pairs == [(d["label"], a) for d, a in zip(docs, answers)]
    assert evaluation.results["tiny-adapter"]["tweet_sentiment_gen"]["invalid"] == answers.count(-1) / ROWS


def test_lm_eval_cli_with_peft_answers_every_row_as_finetune_evaluate(
    evaluation, lm_eval_cli: tuple[Popen, Path]
) -> None:
    run, folder = lm_eval_cli
    assert run.wait() == 0, (folder / "lm_eval.log").read_text()[-2000:]
    for variant in ("tweet_sentiment_gen", "tweet_sentiment_mc"):
        [samples] = folder.rglob(f"samples_{variant}_*.jsonl")
        rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda s: s["doc_id"])
        assert [tuple(s["macro_f1"]) for s in rows] == evaluation.pairs["tiny-adapter"][variant], variant
    [results] = folder.rglob("results_*.json")
    scores = json.loads(results.read_text())["results"]
    assert scores["tweet_sentiment_mc"]["acc,none"] == evaluation.results["tiny-adapter"]["tweet_sentiment_mc"]["acc"]


@pytest.fixture(scope="module")
def chat_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a chat template saved in its tokenizer, in a folder of the same name (the adapter's
    base, as its check of the base reads it)."""
    folder = shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("chat") / tiny_model_dir.name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


def samples(folder: Path, variant: str) -> list[dict]:
    [path] = folder.rglob(f"samples_{variant}_*.jsonl")
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])


def test_lm_eval_flags_ask_and_answer_every_row_as_lm_eval_with_the_same_flags(
    chat_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    """`--num_fewshot 3 --apply_chat_template`: the same prompts (three examples of the training rows, as chat
    turns through the template), the same log-likelihoods and generations (the tiny model's answers alone mostly
    fall on one label), the same answers; recorded in metrics.json, report.md and the card's commands."""
    flags = ["--num_fewshot", str(SHOTS), "--apply_chat_template", "--limit", str(CHAT_ROWS), "--log_samples"]
    report, ours, theirs = tmp_path / "report", tmp_path / "ours", tmp_path / "theirs"
    model = ["--model_name_or_path", str(chat_model_dir), "--adapter", str(tiny_adapter_dir)]
    cmd = [
        sys.executable, "-m", "lm_eval",
        "--include_path", str(tasks_path()),
        "--tasks", TASK_GROUP,
        "--model", "hf",
        "--model_args", f"pretrained={chat_model_dir},peft={tiny_adapter_dir}",
        "--device", "cpu",
        "--batch_size", "16",
        *flags,
        "--output_path", str(theirs),
    ]  # fmt: skip
    log = tmp_path / "lm_eval.log"
    with log.open("w") as stderr, Popen(cmd, stdout=stderr, stderr=stderr, cwd=tmp_path) as run:
        main(["evaluate", *model, *flags, "--output_path", str(ours), "--output_dir", str(report)])  # meanwhile
    assert run.returncode == 0, log.read_text()[-2000:]
    answers = json.loads((report / "answers.json").read_text())
    for variant in ("tweet_sentiment_gen", "tweet_sentiment_mc"):
        rows, mine = samples(theirs, variant), samples(ours / "tiny-adapter", variant)
        assert len(rows) == CHAT_ROWS
        assert [s["macro_f1"] for s in rows] == answers["tiny-adapter"][variant], variant
        assert [s["arguments"] for s in mine] == [s["arguments"] for s in rows], f"{variant}: other prompts"
        assert [s["resps"] for s in mine] == [s["resps"] for s in rows], f"{variant}: other log-likelihoods or text"
        prompt = rows[0]["arguments"]["gen_args_0"]["arg_0"]
        assert prompt.count("<|user|>") == SHOTS + 1 and prompt.endswith("<|assistant|>"), prompt
        assert len(samples(ours / "base", variant)) == CHAT_ROWS
    [their_results] = theirs.rglob("results_*.json")
    environment = json.loads(their_results.read_text())["pretty_env_info"]
    for name in ("base", "tiny-adapter"):  # the environment, collected once for both, recorded in each as lm-eval does
        [results] = (ours / name).rglob("results_*.json")
        assert json.loads(results.read_text())["pretty_env_info"] == environment, name
    metrics = json.loads((report / "metrics.json").read_text())
    asked = {"num_fewshot": SHOTS, "apply_chat_template": True, "fewshot_as_multiturn": True}
    assert metrics["lm_eval_args"] == asked
    written = f"--num_fewshot {SHOTS} --apply_chat_template --fewshot_as_multiturn"
    assert f"Asked with lm-eval's `{written}`" in (report / "report.md").read_text()
    config, model_args = read_adapter(tiny_adapter_dir)
    card = model_card("me/tiny", config, model_args, [], report_results(report, tiny_adapter_dir), False, None).text
    assert f"lm-eval asked every row with `{written}`" in card
    assert f"--model_args pretrained={model_args['model_name_or_path']},peft=me/tiny {written}\n" in card
    assert f"--adapter me/tiny {written}\n" in card
