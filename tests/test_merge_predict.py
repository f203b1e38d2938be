"""`finetune merge` gives a plain model equal to base + adapter; `finetune predict` labels every row as the
benchmark's multiple-choice variant answers it."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.benchmark import load_tasks
from finetune.cli import main
from finetune.data import BadInput, read_rows
from finetune.evaluate import evaluate
from finetune.model import base_config
from lm_eval_tasks.tweet_sentiment.utils import LABELS

ROWS = 8


def test_predict_and_merge_take_an_adapter_for_a_base_of_another_name_only_when_allowed(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    renamed = shutil.copytree(tiny_model_dir, tmp_path / "a-local-copy")  # the same weights under another name
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "what a day"}\n')
    predict = [
        "predict",
        "--model_name_or_path",
        str(renamed),
        "--adapter",
        str(tiny_adapter_dir),
        "--input_file",
        str(source),
        "--output_file",
        str(tmp_path / "labeled.jsonl"),
    ]
    merge = [
        "merge",
        "--model_name_or_path",
        str(renamed),
        "--adapter",
        str(tiny_adapter_dir),
        "--output_dir",
        str(tmp_path / "merged"),
    ]
    for refused in (predict, merge):
        with pytest.raises(SystemExit):
            main(refused)
        assert "(pass --allow_other_base if they are the same model)" in capsys.readouterr().err
    main([*predict, "--allow_other_base"])
    main([*merge, "--allow_other_base"])
    assert len((tmp_path / "labeled.jsonl").read_text().splitlines()) == 1
    assert (tmp_path / "merged" / "config.json").is_file()


def test_merged_model_loads_plainly_and_matches_the_adapter(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    main(
        [
            "merge",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--adapter",
            str(tiny_adapter_dir),
            "--output_dir",
            str(tmp_path),
            "--dtype",
            "float32",
        ]
    )
    merged = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_adapter_dir)
    ids = torch.arange(1, 30).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(
            merged(input_ids=ids).logits, with_adapter(input_ids=ids).logits, rtol=1e-4, atol=1e-5
        )


def test_merge_defaults_to_16_bit(tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path) -> None:
    main(
        [
            "merge",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--adapter",
            str(tiny_adapter_dir),
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.dtype == torch.bfloat16


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_predict_labels_every_row_as_evaluate_answers_it(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path, suffix: str, label_logliks
) -> None:
    docs = list(load_tasks(["tweet_sentiment_mc"])["tweet_sentiment_mc"].test_docs())[:ROWS]
    source = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        source.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))
    else:
        source.write_text(
            "id,text\n" + "".join(f'{d["id"]},"{d["text"].replace(chr(34), 2 * chr(34))}"\n' for d in docs)
        )
    out = tmp_path / "labeled.jsonl"
    main(
        [
            "predict",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--adapter",
            str(tiny_adapter_dir),
            "--input_file",
            str(source),
            "--output_file",
            str(out),
        ]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [d["id"] for d in docs]

    scored = evaluate(
        base_config(str(tiny_model_dir)), [str(tiny_adapter_dir)], tasks=load_tasks(["tweet_sentiment_mc"]), limit=ROWS
    )
    assert [LABELS.index(r["prediction"]) for r in rows] == [
        a for _, a in scored.pairs["tiny-adapter"]["tweet_sentiment_mc"]
    ]

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_adapter_dir)
    logliks = label_logliks(model, AutoTokenizer.from_pretrained(tiny_model_dir), [d["text"] for d in docs])
    shares = [max(math.exp(x) for x in row) / sum(math.exp(x) for x in row) for row in logliks]
    assert [r["confidence"] for r in rows] == pytest.approx(shares, abs=1e-4)


def test_bad_input_names_the_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(BadInput, match=rf"{source}:2: `text` is not a string \(got 3\)"):
        read_rows(source)
    source.write_text('{"text": "fine"}\n\n{"text": \n')
    with pytest.raises(BadInput, match=rf"{source}:3: not valid JSON"):
        read_rows(source)
    table = tmp_path / "in.csv"
    table.write_text("id,tweet\n1,hello\n")
    with pytest.raises(BadInput, match=rf"{table}:1: the CSV header has no `text` column \(it has: id, tweet\)"):
        read_rows(table)


def test_the_cli_prints_a_users_error_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "in.csv"
    table.write_text("id,tweet\n1,hello\n")
    with pytest.raises(SystemExit) as exit:
        main(["predict", "--input_file", str(table), "--output_file", str(tmp_path / "out.jsonl")])
    assert exit.value.code == 2
    assert capsys.readouterr().err == (
        f"finetune predict: error: {table}:1: the CSV header has no `text` column (it has: id, tweet)\n"
    )


def test_demo_trains_then_scores_base_and_adapter_on_the_generative_variant(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    # the preset's top third of the blocks is counted from the base's depth: the tiny model's 2 give 1; the guard
    # would stop a random model, whose answers collapse
    overrides = [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--train_limit",
        "32",
        "--eval_limit",
        "8",
        "--divergence_guard",
        "false",
    ]
    main(
        [
            "demo",
            "--output_dir",
            str(tmp_path),
            "--limit",
            "8",
            *overrides,
            "--max_steps",
            "2",
            "--eval_steps",
            "1",
            "--save_steps",
            "1",
        ]
    )
    printed = capsys.readouterr().out
    assert "| base | tweet_sentiment_gen |" in printed and "| adapter | tweet_sentiment_gen |" in printed
    assert "tweet_sentiment_mc" not in printed
    assert "total" in printed and (tmp_path / "report" / "comparison.png").exists()
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert set(metrics["results"]) == {"base", "adapter"}
    assert metrics["rows"] == {"tweet_sentiment_gen": 8}, "scored on the first --limit rows"
