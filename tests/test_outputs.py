"""Results are written beside their place and renamed in: a failure leaves the old result whole, and an existing
result is replaced only with --overwrite. A training run's folder is continued only with --resume."""

import errno
import json
import stat
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

import finetune.train
from finetune import FinetuneError
from finetune.cli import main
from finetune.outputs import OutputExists, current_umask, written


def siblings(folder: Path) -> list[str]:
    """What lies beside a result: no temporary folder or file may be left there."""
    return sorted(p.name for p in folder.parent.iterdir())


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith("\n")
    last = err.splitlines()[-1]  # after any progress bars of loading
    assert last.startswith(f"finetune {argv[0]}: error: ")
    return last


def test_a_failed_write_leaves_the_old_result_and_no_trace(tmp_path: Path) -> None:
    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "metrics.json").write_text("old")
    with pytest.raises(RuntimeError), written(dest, overwrite=True) as staging:
        (staging / "metrics.json").write_text("half")
        raise RuntimeError("the machine went away")
    assert (dest / "metrics.json").read_text() == "old" and siblings(dest) == ["report"]
    with written(dest, overwrite=True) as staging:
        (staging / "metrics.json").write_text("new")
    assert (dest / "metrics.json").read_text() == "new" and siblings(dest) == ["report"]


def test_merge_refuses_a_used_folder_and_overwrite_keeps_the_old_model_when_it_fails(
    tiny_model_dir: Path, tiny_adapter_dir: Path, make_tiny_llama, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("last week's model")
    merge = [
        "merge",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--adapter",
        str(tiny_adapter_dir),
        "--output_dir",
        str(out),
    ]
    assert one_line_error(capsys, merge) == (
        f"finetune merge: error: {out}: the folder is not empty; pass --overwrite to replace it"
    )
    wider = tmp_path / "tiny-llama"  # same name, other shapes: the adapter is refused inside the write
    make_tiny_llama(vocab_size=800, eos_id=0, hidden_size=48).save_pretrained(wider)
    other_base = [
        "merge",
        "--model_name_or_path",
        str(wider),
        "--adapter",
        str(tiny_adapter_dir),
        "--output_dir",
        str(out),
        "--overwrite",
    ]
    assert "does not fit base" in one_line_error(capsys, other_base)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and siblings(out) == ["merged", "tiny-llama"]

    main([*merge, "--overwrite"])
    assert not (out / "keep.txt").exists() and AutoModelForCausalLM.from_pretrained(out) is not None


def test_predict_and_evaluate_refuse_a_used_output_before_loading_anything(tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hello"}\n')
    labeled = tmp_path / "labeled.jsonl"
    labeled.write_text("{}\n")
    predict = [
        "predict",
        "--model_name_or_path",
        str(tmp_path / "no-model"),
        "--input_file",
        str(source),
        "--output_file",
        str(labeled),
    ]
    assert one_line_error(capsys, predict).endswith(f"{labeled}: the file exists; pass --overwrite to replace it")
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text("{}")
    evaluate = ["evaluate", "--model_name_or_path", str(tmp_path / "no-model"), "--output_dir", str(report)]
    assert one_line_error(capsys, evaluate).endswith(
        f"{report}: the folder is not empty; pass --overwrite to replace it"
    )


def test_predict_labels_go_to_a_jsonl_file_and_a_refused_run_leaves_no_folder_behind(tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hello"}\n')
    predict = [
        "predict",
        "--model_name_or_path",
        str(tmp_path / "no-model"),
        "--input_file",
        str(source),
        "--output_file",
    ]
    (tmp_path / "labels").mkdir()
    assert one_line_error(capsys, [*predict, str(tmp_path / "labels"), "--overwrite"]).endswith(
        f"{tmp_path / 'labels'}: the labels are JSON Lines; name a .jsonl file"
    )
    (tmp_path / "labels.jsonl").mkdir()
    assert one_line_error(capsys, [*predict, str(tmp_path / "labels.jsonl"), "--overwrite"]).endswith(
        f"{tmp_path / 'labels.jsonl'}: a folder; name the file to write"
    )
    assert one_line_error(capsys, [*predict, str(source.with_suffix(".csv"))]).endswith("name a .jsonl file")
    nested = tmp_path / "a" / "b" / "labeled.jsonl"
    one_line_error(
        capsys,
        [
            "predict",
            "--model_name_or_path",
            str(tmp_path / "no-model"),
            "--input_file",
            str(tmp_path / "absent.jsonl"),
            "--output_file",
            str(nested),
        ],
    )
    assert not (tmp_path / "a").exists()


def test_predict_writes_its_labels_and_report_whole(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,text\n1,good day\n2,\n3,bad day\n")
    labeled = tmp_path / "labeled.jsonl"
    main(
        [
            "predict",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--input_file",
            str(source),
            "--output_file",
            str(labeled),
            "--skip_bad_rows",
        ]
    )
    assert [json.loads(line)["id"] for line in labeled.read_text().splitlines()] == ["1", "3"]
    report = json.loads((tmp_path / "labeled.report.json").read_text())
    assert (report["rows"], report["skipped_rows"]) == (2, [f"{source}:3: `text` is empty"])
    assert siblings(labeled) == ["in.csv", "labeled.jsonl", "labeled.report.json"]


def test_an_output_that_cannot_be_written_is_one_line(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hello"}\n')
    message = one_line_error(
        capsys, ["predict", "--input_file", str(source), "--output_file", str(blocker / "labeled.jsonl")]
    )
    target = blocker / "labeled.jsonl"
    assert message == f"finetune predict: error: {target}: cannot write there ({blocker} is a file, not a folder)"
    read_only = Path("/proc/finetune-test/labeled.jsonl")  # not writable even by root
    message = one_line_error(capsys, ["predict", "--input_file", str(source), "--output_file", str(read_only)])
    assert message.startswith(f"finetune predict: error: {read_only}: cannot write there (")


def test_a_used_run_folder_is_continued_only_with_resume_and_replaced_only_with_overwrite(
    tiny_model_dir: Path, tiny_adapter_dir: Path, train_tiny, tmp_path: Path
) -> None:
    with pytest.raises(OutputExists, match="not empty; pass --resume true to continue its run, or --overwrite true"):
        train_tiny(tiny_model_dir, tiny_adapter_dir)
    with pytest.raises(FinetuneError, match="no checkpoint to resume from"):
        train_tiny(tiny_model_dir, tmp_path / "new", "--resume", "true")

    out = tmp_path / "run"
    out.mkdir()
    (out / "adapter_model.safetensors").write_text("last week's adapter")
    train_tiny(
        tiny_model_dir,
        out,
        "--overwrite",
        "true",
        "--max_steps",
        "1",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
    )
    assert (out / "adapter_model.safetensors").read_bytes() != b"last week's adapter"
    assert siblings(out) == ["run"], "the replaced folder is gone once the new adapter is complete"


def test_a_run_that_fails_while_writing_its_adapter_puts_the_run_it_replaces_back(
    tiny_model_dir: Path, train_tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "adapter_model.safetensors").write_text("last week's adapter")

    def disk_full(*args) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(finetune.train, "write_training_log", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train_tiny(
            tiny_model_dir,
            out,
            "--overwrite",
            "true",
            "--max_steps",
            "1",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        )
    assert [p.name for p in out.iterdir()] == ["adapter_model.safetensors"]
    assert (out / "adapter_model.safetensors").read_text() == "last week's adapter"
    assert siblings(out) == ["run"], "no half-written adapter or hidden old run is left beside it"


def test_weights_are_written_as_readable_as_every_other_result(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    """safetensors writes through a private temporary file (0600); results get the user's umask, as the rest."""
    main(["merge", "--model_name_or_path", str(tiny_model_dir), "--adapter", str(tiny_adapter_dir),
          "--output_dir", str(tmp_path / "merged")])  # fmt: skip
    expected = 0o666 & ~current_umask()
    for folder in (tiny_adapter_dir, tmp_path / "merged"):
        modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in folder.iterdir() if path.is_file()}
        assert any(name.endswith(".safetensors") for name in modes)
        assert set(modes.values()) == {oct(expected)}, modes


def test_predict_reads_the_text_from_the_column_named(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "tweets.csv"
    source.write_text("id,tweet\n1,good day\n2,bad day\n")
    predict = ["predict", "--model_name_or_path", str(tiny_model_dir), "--input_file", str(source),
               "--output_file", str(tmp_path / "labeled.jsonl")]  # fmt: skip
    with pytest.raises(SystemExit):
        main(predict)
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"finetune predict: error: {source}:1: the CSV header has no `text` column (it has: id, tweet)"
    )
    main([*predict, "--text_column", "tweet"])
    rows = [json.loads(line) for line in (tmp_path / "labeled.jsonl").read_text().splitlines()]
    assert [(row["id"], row["tweet"]) for row in rows] == [("1", "good day"), ("2", "bad day")]
    assert all(row["prediction"] in ("negative", "neutral", "positive") for row in rows)
