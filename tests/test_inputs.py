"""Your own files: training rows from JSONL, CSV and `finetune predict` output go through the task's own prompt,
and every kind of bad input stops with its file and line, or, when asked, is skipped and counted."""

import codecs
import csv
import gzip
import json
import shutil
from pathlib import Path

import pytest

from finetune.benchmark import TRAIN_TASK, load_tasks
from finetune.cli import main
from finetune.config import parse_train_args
from finetune.data import BadInput, read_rows
from finetune.dataset import DATA_REPORT
from finetune.train import trainer_for
from lm_eval_tasks.tweet_sentiment.utils import DATA_DIR

TINY_CONFIG = Path(__file__).parent / "tiny.yaml"
# The source's whole train split, beside the checkout (../shared) where the project keeps it; absent elsewhere.
SOURCE_TRAIN = Path(__file__).resolve().parents[2] / "shared/data/tweet_sentiment_extraction/train.jsonl"
DOCS = [json.loads(line) for line in (DATA_DIR / "train.jsonl").read_text().splitlines()[:12]]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def trainer_on(model_dir: Path, out: Path, *flags: str):
    argv = [str(TINY_CONFIG), "--model_name_or_path", str(model_dir), "--output_dir", str(out), *flags]
    return trainer_for(*parse_train_args(argv))


def test_a_users_csv_becomes_the_same_training_text_as_the_pinned_split(tiny_model_dir: Path, tmp_path: Path) -> None:
    # labels as words (any case) in one half, as indices in the other; the text in a column named `tweet`
    rows = [[d["id"], d["text"], d["label_text"].upper() if i % 2 else d["label"]] for i, d in enumerate(DOCS)]
    table = write_csv(tmp_path / "mine.csv", ["id", "tweet", "sentiment"], rows)
    trainer = trainer_on(
        tiny_model_dir, tmp_path / "out", "--train_file", str(table),
        "--text_column", "tweet", "--label_column", "sentiment",
    )  # fmt: skip
    task = load_tasks([TRAIN_TASK])[TRAIN_TASK]
    assert trainer.train_dataset["prompt"] == [task.doc_to_text(d) for d in DOCS]
    eos = trainer.processing_class.eos_token  # trl appends it to each completion
    assert trainer.train_dataset["completion"] == [f" {d['label_text']}{eos}" for d in DOCS]
    pinned_validation = [task.doc_to_text(d) for d in list(task.validation_docs())[:16]]
    assert trainer.eval_dataset["prompt"] == pinned_validation, "no --validation_file: the pinned validation rows"


def test_a_users_jsonl_trains_with_its_own_validation_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": d["text"], "label": d["label_text"]} for d in DOCS])
    validation = write_jsonl(tmp_path / "val.jsonl", [{"text": d["text"], "label": d["label"]} for d in DOCS[:3]])
    trainer = trainer_on(tiny_model_dir, tmp_path / "out", "--train_file", str(train), "--validation_file",
                         str(validation))  # fmt: skip
    assert len(trainer.train_dataset) == len(DOCS)
    eos = trainer.processing_class.eos_token
    assert trainer.eval_dataset["completion"] == [f" {d['label_text']}{eos}" for d in DOCS[:3]]


def test_predict_output_trains_directly_keeping_only_confident_rows(
    tiny_model_dir: Path, train_tiny, tmp_path: Path
) -> None:
    unlabeled = write_jsonl(tmp_path / "unlabeled.jsonl", [{"id": d["id"], "text": d["text"]} for d in DOCS])
    labeled = tmp_path / "labeled.jsonl"
    main(
        [
            "predict",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--input_file",
            str(unlabeled),
            "--output_file",
            str(labeled),
        ]
    )
    predictions = [json.loads(line) for line in labeled.read_text().splitlines()]
    cut = sorted(r["confidence"] for r in predictions)[len(predictions) // 2]
    kept = [r for r in predictions if r["confidence"] >= cut]

    adapter = train_tiny(
        tiny_model_dir, tmp_path / "student", "--train_file", str(labeled), "--label_column", "prediction",
        "--min_confidence", str(cut), "--max_steps", "2", "--eval_steps", "1", "--save_steps", "1",
    )  # fmt: skip
    report = json.loads((adapter / DATA_REPORT).read_text())["train"]
    assert (report["rows"], report["below_min_confidence"], report["skipped"]) == (
        len(kept),
        len(predictions) - len(kept),
        0,
    )
    assert (adapter / "adapter_model.safetensors").exists()


def test_min_confidence_filters_the_training_rows_not_the_validation_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    labeled = [{**d, "prediction": d["label_text"], "confidence": 0.5 + i / 100} for i, d in enumerate(DOCS)]
    train = write_jsonl(tmp_path / "labeled.jsonl", labeled)
    validation = write_jsonl(tmp_path / "gold.jsonl", [{"text": d["text"], "prediction": d["label"]} for d in DOCS[:4]])
    trainer = trainer_on(
        tiny_model_dir, tmp_path / "out", "--train_file", str(train), "--validation_file", str(validation),
        "--label_column", "prediction", "--min_confidence", "0.55",
    )  # fmt: skip
    assert (len(trainer.train_dataset), len(trainer.eval_dataset)) == (len(DOCS) - 5, 4)


def test_skipped_training_rows_are_counted_beside_the_adapter(
    tiny_model_dir: Path, train_tiny, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{"text": d["text"], "label": d["label"]} for d in DOCS]
    rows[3] = {"text": "  ", "label": 1}
    rows[5] = {"text": "so happy", "label": "joyful"}
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(BadInput, match=rf"^{train}:4: `text` is only whitespace$"):
        train_tiny(tiny_model_dir, tmp_path / "stopped", "--train_file", str(train))
    assert not (tmp_path / "stopped").exists(), "the file is checked before anything is trained"

    adapter = train_tiny(tiny_model_dir, tmp_path / "out", "--train_file", str(train), "--skip_bad_rows", "true",
                         "--max_steps", "2", "--eval_steps", "1", "--save_steps", "1")  # fmt: skip
    report = json.loads((adapter / DATA_REPORT).read_text())["train"]
    assert report["rows"] == report["used"] == len(DOCS) - 2 and report["skipped_rows"] == [
        f"{train}:4: `text` is only whitespace",
        f"{train}:6: label 'joyful' is not one of negative, neutral, positive (or 0-2)",
    ]
    assert f"skipped 2 bad row(s) of {train}" in caplog.text


def test_the_source_train_splits_one_empty_text_stops_a_run_or_is_skipped(tmp_path: Path) -> None:
    if not SOURCE_TRAIN.exists():
        pytest.skip(f"{SOURCE_TRAIN} is not on this machine")
    line = next(i for i, raw in enumerate(SOURCE_TRAIN.open(), 1) if '"fdb77c3752"' in raw)
    with pytest.raises(BadInput, match=rf"^{SOURCE_TRAIN}:{line}: `text` is empty$"):
        read_rows(SOURCE_TRAIN, label_column="label")
    table = read_rows(SOURCE_TRAIN, label_column="label", skip_bad_rows=True)
    assert table.skipped == [f"{SOURCE_TRAIN}:{line}: `text` is empty"]
    assert len(table.rows) == 27480


BAD_JSONL = [
    ('{"text": "fine"}\n{"text": \n', 2, "not valid JSON (Expecting value)"),
    ('{"text": "fine"}\n["a list"]\n', 2, "expected a JSON object, got list"),
    ('{"text": "fine"}\n{"id": 2}\n', 2, "no `text`"),
    ('{"text": "fine"}\n{"text": null}\n', 2, "`text` is null"),
    ('{"text": "fine"}\n\n{"text": ""}\n', 3, "`text` is empty"),
    ('{"text": "fine"}\n{"text": " \\t "}\n', 2, "`text` is only whitespace"),
    ('{"text": "fine"}\n{"text": 3}\n', 2, "`text` is not a string (got 3)"),
    ('{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n{"id": 1, "text": "c"}\n', 3, "duplicate id 1 (first on line 1)"),
    (
        '{"text": "fine"}\n{"text": "cut emoji \\ud83d"}\n',
        2,
        "holds '\\ud83d', half of a UTF-16 surrogate pair, which is no text",
    ),
    (
        '{"text": "fine"}\n{"text": "ok", "note": "\\udc00"}\n',
        2,
        "holds '\\udc00', half of a UTF-16 surrogate pair, which is no text",
    ),
]


@pytest.mark.parametrize(("content", "line", "why"), BAD_JSONL)
def test_a_bad_jsonl_row_stops_the_read_with_its_line_or_is_skipped(
    tmp_path: Path, content: str, line: int, why: str
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    with pytest.raises(BadInput) as err:
        read_rows(path)
    assert str(err.value) == f"{path}:{line}: {why}"
    table = read_rows(path, skip_bad_rows=True)
    assert table.skipped == [f"{path}:{line}: {why}"]
    assert len(table.rows) == (2 if "duplicate" in why else 1)


LABEL_CASES = [
    ("positive", 2), ("Negative ", 0), ("NEUTRAL", 1), (0, 0), (2, 2), ("1", 1),
    ("happy", None), (3, None), (-1, None), ("3", None), (True, None), (1.0, None), (None, None), ("", None),
]  # fmt: skip


@pytest.mark.parametrize(("label", "index"), LABEL_CASES)
def test_a_label_is_the_word_or_its_index(tmp_path: Path, label, index: int | None) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "ok", "label": label}])
    if index is None:
        with pytest.raises(
            BadInput, match=rf"^{path}:1: label .* is not one of negative, neutral, positive \(or 0-2\)$"
        ):
            read_rows(path, label_column="label")
    else:
        assert read_rows(path, label_column="label").rows[0]["label"] == index


def test_a_missing_label_column_names_the_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["text"], [["ok"]])
    with pytest.raises(BadInput, match=rf"^{path}:2: no `label`$"):
        read_rows(path, label_column="label")


def test_file_level_problems_are_one_line_each(tmp_path: Path) -> None:
    cases = {
        "empty.jsonl": (b"", "{p}: the file is empty"),
        "blank.csv": (b"\n \n", "{p}: the file is empty"),
        "header.csv": (b"id,text\n", "{p}: the file has a header but no rows"),
        "tweets.csv": (b"id,tweet\n1,hello\n", "{p}:1: the CSV header has no `text` column (it has: id, tweet)"),
        "latin1.csv": (
            "id,text\n1,ok\n2,café\n".encode("latin-1"),
            "{p}:3: not UTF-8 (byte 0xe9); save the file as UTF-8",
        ),
        "latin1.jsonl": (
            '{"text": "ok"}\n{"text": "café"}\n'.encode("latin-1"),
            "{p}:2: not UTF-8 (byte 0xe9); save the file as UTF-8",
        ),
        "utf16.csv": (
            "text\nhi\n".encode("utf-16"),
            "{p}:1: UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8",
        ),
        "rows.txt": (b"hello\n", "{p}: expected a .jsonl or .csv file (or either gzip-compressed, .gz)"),
        "short.csv": (b"id,text\n1,hi\n2\n", "{p}:3: 1 fields where the header has 2"),
        "twice.csv": (b"text,id,text\nfirst,1,second\n", "{p}:1: the CSV header names text more than once"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(BadInput) as err:
            read_rows(path)
        assert str(err.value) == message.format(p=path)
    with pytest.raises(BadInput, match=rf"^{tmp_path / 'missing.jsonl'}: no such file$"):
        read_rows(tmp_path / "missing.jsonl")


def test_gzip_files_are_read_as_their_text_and_a_broken_one_is_named(tmp_path: Path) -> None:
    rows = b'{"id": "1", "text": "hello"}\n{"id": "2", "text": "bye"}\n'
    for name in ("rows.jsonl.gz", "rows.jsonl"):  # by its suffix, or by its first bytes
        (tmp_path / name).write_bytes(gzip.compress(rows))
        assert [row["text"] for row in read_rows(tmp_path / name).rows] == ["hello", "bye"]
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(b"text\nhello\n")[:-6])
    with pytest.raises(BadInput, match=rf"^{cut}: gzip-compressed, but not readable as gzip \(.+\)$"):
        read_rows(cut)


def test_a_file_the_system_will_not_read_is_one_line_naming_it(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    with pytest.raises(BadInput, match=rf"^{loop}: cannot read it \(Too many levels of symbolic links\)$"):
        read_rows(loop)
    with pytest.raises(SystemExit) as exit:
        main(["train", str(TINY_CONFIG), "--model_name_or_path", str(tiny_model_dir), "--train_file", str(loop)])
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"finetune train: error: {loop}: cannot read it (Too many levels of symbolic links)"
    )


def test_a_byte_order_mark_and_windows_line_ends_are_read_as_plain_utf8(tmp_path: Path) -> None:
    table = tmp_path / "EXCEL.CSV"
    table.write_bytes(codecs.BOM_UTF8 + "text,label\r\ncafé,positive\r\n".encode())
    lines = tmp_path / "bom.jsonl"
    lines.write_bytes(codecs.BOM_UTF8 + b'{"text": "caf\\u00e9", "label": 2}\r\n')
    for path in (table, lines):
        assert [(r["text"], r["label"]) for r in read_rows(path, label_column="label").rows] == [("café", 2)]


def test_a_very_long_line_is_read_whole(tmp_path: Path) -> None:
    text = "word " * 200_000
    assert read_rows(write_jsonl(tmp_path / "long.jsonl", [{"text": text}])).rows[0]["text"] == text
    assert read_rows(write_csv(tmp_path / "long.csv", ["text"], [[text]])).rows[0]["text"] == text


def test_a_multiline_csv_record_is_named_by_the_line_it_starts_on(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["text", "label"], [["one\ntwo\nthree", "0"], ["four", "joy"]])
    with pytest.raises(BadInput, match=rf"^{path}:5: label 'joy'"):
        read_rows(path, label_column="label")


def test_every_row_bad_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": ""}, {"text": None}])
    with pytest.raises(BadInput, match=rf"^{path}: no usable rows \(2 bad, first: {path}:1: `text` is empty\)$"):
        read_rows(path, skip_bad_rows=True)


def test_min_confidence_needs_a_confidence_and_says_when_nothing_is_left(tmp_path: Path) -> None:
    rows = [{"text": "a", "prediction": "positive", "confidence": 0.5}, {"text": "b", "prediction": "neutral"}]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    with pytest.raises(BadInput, match=rf"^{path}:2: no number in `confidence` \(got None\)$"):
        read_rows(path, label_column="prediction", min_confidence=0.4)
    with pytest.raises(BadInput) as err:
        read_rows(path, label_column="prediction", min_confidence=0.9, skip_bad_rows=True)
    assert str(err.value) == (
        f"{path}: no usable rows (1 bad, first: {path}:2: no number in `confidence` (got None); "
        "1 below --min_confidence)"
    )


@pytest.mark.parametrize(
    ("line", "got"), [('"confidence": NaN', "nan"), ('"confidence": "inf"', "'inf'"), ('"confidence": true', "True")]
)
def test_a_confidence_that_is_no_finite_number_passes_no_threshold(tmp_path: Path, line: str, got: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(f'{{"text": "a", "prediction": "positive", {line}}}\n')
    with pytest.raises(BadInput, match=rf"^{path}:1: no number in `confidence` \(got {got}\)$"):
        read_rows(path, label_column="prediction", min_confidence=0.9)


def test_a_duplicate_id_is_bad_whether_or_not_its_first_row_passed_min_confidence(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "text": "x", "prediction": "positive", "confidence": 0.9},
        {"id": "b", "text": "y", "prediction": "neutral", "confidence": 0.3},
        {"id": "b", "text": "z", "prediction": "neutral", "confidence": 0.95},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    for threshold in (None, 0.8):
        with pytest.raises(BadInput, match=rf"^{path}:3: duplicate id 'b' \(first on line 2\)$"):
            read_rows(path, label_column="prediction", min_confidence=threshold)


def test_a_stray_quote_in_a_csv_is_named_not_read_as_one_field_to_the_end(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        'id,text,label\n1,fine,positive\n2,"oops,negative\n' + "".join(f"{i},ok,neutral\n" for i in range(3, 50))
    )
    with pytest.raises(BadInput, match=rf"^{path}:\d+: not readable as CSV"):
        read_rows(path, label_column="label", skip_bad_rows=True)


def test_a_row_longer_than_the_model_takes_is_named_not_cut(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # trl would cut the answer off the end of such a row, and lm-eval the instruction off its start
    rows = [{"text": d["text"], "label": d["label"]} for d in DOCS]
    rows[2]["text"] = "so long " * 400
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(BadInput, match=rf"^{train}:3: \d+ tokens with the prompt and answer, more than the 256 the"):
        trainer_on(tiny_model_dir, tmp_path / "out", "--train_file", str(train), "--max_length", "256")
    trainer = trainer_on(tiny_model_dir, tmp_path / "out", "--train_file", str(train), "--max_length", "256",
                         "--skip_bad_rows", "true")  # fmt: skip
    assert len(trainer.train_dataset) == len(DOCS) - 1

    labeled = tmp_path / "labeled.jsonl"
    predict = [
        "predict",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--input_file",
        str(train),
        "--output_file",
        str(labeled),
    ]
    with pytest.raises(SystemExit):
        main(predict)
    # refused before any weights load: a copy of the base whose weights are no weights says the same
    broken = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken"))
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"no weights")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*predict[:2], str(broken), *predict[3:]])
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"finetune predict: error: {train}:3: ")
    main([*predict, "--skip_bad_rows"])
    report = json.loads((tmp_path / "labeled.report.json").read_text())
    assert report["rows"] == len(DOCS) - 1 and report["skipped_rows"][0].startswith(f"{train}:3: ")
