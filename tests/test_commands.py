"""Mistakes on the command line and in model paths end in one line that says what is wrong, before any model is
loaded: a misspelled flag names the closest known one."""

import importlib.util
from pathlib import Path

import pytest
from transformers import LlamaConfig, ViTConfig

from finetune.cli import main

TINY_CONFIG = Path(__file__).parent / "tiny.yaml"


def error_of(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", str(TINY_CONFIG), "--lora_rr", "3"], "unrecognized arguments: --lora_rr (did you mean --lora_r?)"),
        (["train", str(TINY_CONFIG), "--learnig_rate", "1"], "(did you mean --learning_rate?)"),
        (["evaluate", "--limt", "3"], "unrecognized arguments: --limt (did you mean --limit?)"),
        (
            ["predict", "--input_file", "a.jsonl", "--output_file", "b.jsonl", "--batchsize", "2"],
            "(did you mean --batch_size?)",
        ),
        (["train", str(TINY_CONFIG), "--lora_r", "abc"], "argument --lora_r/--lora-r: invalid int value: 'abc'"),
        (["predict", "--input_file", "a.jsonl"], "the following arguments are required: --output_file/--output-file"),
        (["evaluate", "--limit", "0"], "argument --limit: 0 is not a positive whole number"),
        (
            ["predict", "--input_file", "a", "--output_file", "b", "--batch_size", "-2"],
            "-2 is not a positive whole number",
        ),
        (["train", "no-such-preset"], "no config file 'no-such-preset' and no preset of that name (presets: "),
        (["train", "embeded-gpu"], "no preset of that name (did you mean embedded-gpu? presets: embedded-cpu-quick, "),
        (["train", "--output_dir", "runs/x"], "give a PRESET or CONFIG.yaml first (presets: embedded-cpu-quick, "),
        (["distill", "--teacher_adapter", "a"], "give a PRESET or CONFIG.yaml first (presets: "),
        (["evaluate", "--log_samples"], "--log_samples needs --output_path (as in lm-eval)"),
        (["evaluate", "--fewshot_as_multiturn"], "--fewshot_as_multiturn needs --apply_chat_template (as in lm-eval)"),
        (["evaluate", "--num_fewshot", "-1"], "--num_fewshot -1: not a number of examples"),
        (["evaluate", "--gen_kwargs", "temperature"], "argument --gen_kwargs: expected `key=value`, got 'temperature'"),
    ],
)
def test_a_bad_command_line_is_one_line(argv: list[str], message: str, capsys) -> None:
    line = error_of(argv, capsys)
    assert line.startswith(f"finetune {argv[0]}: error: ") and message in line


def test_an_unknown_key_in_a_config_file_names_the_file_and_the_closest_key(tmp_path: Path, capsys) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(TINY_CONFIG.read_text() + "lora_rank: 8\n")
    line = len(TINY_CONFIG.read_text().splitlines()) + 1
    assert error_of(["train", str(config)], capsys) == (
        f"finetune train: error: {config}:{line}: unknown key lora_rank (did you mean lora_r?)"
    )


def test_a_missing_input_file_is_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.jsonl"
    assert error_of(["predict", "--input_file", str(missing), "--output_file", str(tmp_path / "o.jsonl")], capsys) == (
        f"finetune predict: error: {missing}: no such file"
    )
    assert error_of(["train", str(TINY_CONFIG), "--train_file", str(missing)], capsys) == (
        f"finetune train: error: {missing}: no such file"
    )


def test_bad_base_models_are_named_before_loading(tmp_path: Path, capsys) -> None:
    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    no_weights = tmp_path / "no-weights"
    LlamaConfig().save_pretrained(no_weights)
    (no_weights / "model.Q4_1.gguf").write_bytes(b"GGUF")
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    not_causal = tmp_path / "vit"  # weights present, but no causal LM class takes its config
    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(
        not_causal
    )
    (not_causal / "model.safetensors").write_bytes(b"")
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hello"}\n')
    cases = {
        str(tmp_path / "missing"): "no such folder",
        str(gguf): "a GGUF file, not a model folder (config.json and safetensors weights) or Hub id",
        str(no_weights): "no weights in this folder (no *.safetensors or *.bin) (only GGUF: model.Q4_1.gguf; "
        "transformers loads it with gguf_file=)",
        str(no_config): "no config.json in this folder, so it is not a Hugging Face model folder",
        str(not_causal): "a vit model, not a causal language model",
        "nowhere/merged": "no such folder, and no Hub model to be had (",
    }
    for base, why in cases.items():
        out = tmp_path / "out.jsonl"
        predict = error_of(
            ["predict", "--model_name_or_path", base, "--input_file", str(source), "--output_file", str(out)], capsys
        )
        assert predict.startswith(f"finetune predict: error: {base}: {why}")
        train = error_of(["train", str(TINY_CONFIG), "--model_name_or_path", base], capsys)
        assert train.startswith(f"finetune train: error: {base}: {why}")


def test_a_model_too_big_for_this_machine_is_refused_from_its_config_alone(tmp_path: Path, capsys) -> None:
    huge = tmp_path / "huge"  # the shapes of a 405B Llama; its weights file is empty and is never read
    LlamaConfig(
        hidden_size=16384,
        intermediate_size=53248,
        num_hidden_layers=126,
        num_attention_heads=128,
        num_key_value_heads=8,
        vocab_size=128256,
    ).save_pretrained(huge)
    (huge / "model.safetensors").write_bytes(b"")
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hello"}\n')
    line = error_of(
        [
            "predict",
            "--model_name_or_path",
            str(huge),
            "--input_file",
            str(source),
            "--output_file",
            str(tmp_path / "o.jsonl"),
            "--dtype",
            "bfloat16",
        ],
        capsys,
    )
    assert line.startswith(f"finetune predict: error: {huge}: its weights need at least 756.0 GiB in bfloat16, more ")
    assert line.endswith("free on this machine (RAM); load it in 4 bits or use a larger device")


def test_a_missing_adapter_is_one_line(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    line = error_of(
        [
            "merge",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--adapter",
            str(tmp_path / "nope"),
            "--output_dir",
            str(tmp_path / "m"),
        ],
        capsys,
    )
    assert line.startswith(
        f"finetune merge: error: no adapter at {tmp_path / 'nope'}: not a folder with adapter_config"
    )


def test_a_config_without_a_base_model_says_so(capsys) -> None:
    assert error_of(["train", str(TINY_CONFIG)], capsys) == (
        "finetune train: error: no base model: set model_name_or_path in the config or pass --model_name_or_path"
    )


def test_an_unknown_task_is_named_with_the_known_ones(tmp_path: Path, capsys) -> None:
    assert error_of(["evaluate", "--tasks", "tweet_sentiment_gne", "--output_dir", str(tmp_path / "r")], capsys) == (
        "finetune evaluate: error: unknown task tweet_sentiment_gne (tasks: tweet_sentiment, tweet_sentiment_full, "
        "tweet_sentiment_gen, tweet_sentiment_gen_full, tweet_sentiment_gen_trainfull, tweet_sentiment_mc, "
        "tweet_sentiment_mc_full)"
    )


def test_a_task_whose_data_cannot_be_had_or_a_task_listed_twice_is_one_line(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWEET_SENTIMENT_DATA_DIR", str(tmp_path))  # a folder without the source's test.jsonl
    evaluate = [
        "evaluate",
        "--model_name_or_path",
        str(tmp_path / "absent"),
        "--output_dir",
        str(tmp_path / "report"),
        "--tasks",
    ]
    assert error_of([*evaluate, "tweet_sentiment_full"], capsys) == (
        f"finetune evaluate: error: task tweet_sentiment_full: Unable to find '{tmp_path / 'test.jsonl'}'"
    )
    (tmp_path / "test.jsonl").write_text('{"id": "1", "text": "a", "label": 0}\n{"id": "2", "text": \n')
    assert error_of([*evaluate, "tweet_sentiment_full"], capsys).startswith(
        "finetune evaluate: error: task tweet_sentiment_full: An error occurred while generating the dataset (JSON"
    )
    assert error_of([*evaluate, "tweet_sentiment", "tweet_sentiment_gen"], capsys).startswith(
        "finetune evaluate: error: tasks tweet_sentiment, tweet_sentiment_gen: Duplicate task 'tweet_sentiment_gen'"
    )


def test_training_takes_a_generative_task_by_its_name_before_anything_loads(tmp_path: Path, capsys) -> None:
    train = ["train", str(TINY_CONFIG), "--model_name_or_path", str(tmp_path / "absent"), "--output_dir", str(tmp_path)]
    assert error_of([*train, "--task", "tweet_sentiment_mc"], capsys) == (
        "finetune train: error: --task tweet_sentiment_mc: a multiple_choice task; training takes a generative "
        "variant (tweet_sentiment_gen)"
    )
    assert error_of([*train, "--task", "tweet_sentimnet"], capsys).startswith(
        "finetune train: error: --task tweet_sentimnet: not a task to train on (tasks: tweet_sentiment_gen, "
    )
    assert error_of([*train, "--task", "tweet_sentiment_gen_full"], capsys) == (
        "finetune train: error: --task tweet_sentiment_gen_full: a test-only variant; train with tweet_sentiment_gen "
        "or give --train_file and --validation_file"
    )


def test_launch_flags_are_judged_before_the_command_and_in_one_line(capsys) -> None:
    assert error_of(["evaluate", "--num_processes", "0"], capsys) == (
        "finetune: error: argument --num_processes/--num-processes: 0 is not a positive whole number"
    )


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed here")
def test_a_4_bit_base_without_bitsandbytes_says_what_to_install(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    evaluate = [
        "evaluate",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--load_in_4bit",
        "--output_dir",
        str(tmp_path / "report"),
    ]
    assert error_of(evaluate, capsys) == (
        "finetune evaluate: error: a 4-bit or 8-bit base needs bitsandbytes (and a GPU): "
        f"pip install -e '{Path(__file__).resolve().parents[1]}[gpu]'"
    )


def test_a_misspelled_key_is_named_before_the_values_are_judged(tmp_path: Path, capsys) -> None:
    config = tmp_path / "mine.yaml"  # bf16 on a CPU would be refused too, but the typo is what the user must see
    config.write_text("model_name_or_path: embedded\nlora_rank: 8\n")
    assert error_of(["train", str(config)], capsys) == (
        f"finetune train: error: {config}:2: unknown key lora_rank (did you mean lora_r?)"
    )
    config.write_text("lora_r: [8\n")
    assert error_of(["train", str(config)], capsys).startswith(f"finetune train: error: {config}: not valid YAML (")
