"""Properties over arbitrary text (hypothesis): the label extractor reads only the first line's whole words, and
the file readers give back exactly what was written, or a BadInput, never another exception."""

import csv
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from finetune.data import BadInput, Table, read_rows
from lm_eval_tasks.tweet_sentiment.utils import INVALID, LABELS, extract_label

NO_LETTERS = st.text(st.characters(exclude_categories=("L",), exclude_characters="\n"))
TEXTS = st.lists(st.text().filter(str.strip), min_size=1, max_size=5)
EXAMPLES = settings(deadline=None, max_examples=150)  # no deadline: the machine may be busy with other work


@EXAMPLES
@given(st.text(), st.text(), st.text())
def test_only_the_first_line_counts(first: str, second: str, other: str) -> None:
    line = first.split("\n")[0]
    assert extract_label(f"{line}\n{second}") == extract_label(f"{line}\n{other}") == extract_label(line)


@EXAMPLES
@given(NO_LETTERS, st.sampled_from(LABELS), NO_LETTERS, st.text())
def test_a_label_amid_punctuation_is_found_in_any_case(before: str, label: str, after: str, rest: str) -> None:
    for form in (label, label.upper(), label.title()):
        assert extract_label(f"{before}{form}{after}\n{rest}") == LABELS.index(label)


@EXAMPLES
@given(st.text(st.characters(categories=("Ll",)), min_size=1))
def test_a_single_word_that_is_not_a_label_is_invalid(word: str) -> None:
    result = extract_label(word)
    assert result == (LABELS.index(word) if word in LABELS else INVALID)


@EXAMPLES
@given(st.text())
def test_the_answer_is_invalid_or_a_label_word_of_the_first_line(answer: str) -> None:
    result = extract_label(answer)
    assert result == INVALID or LABELS[result] in answer.split("\n")[0].lower()


def read_written(suffix: str, write: Callable[[Path], object], **options) -> Table:
    """Write a file with `write`, read it with read_rows, and leave nothing behind."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"rows{suffix}"
        write(path)
        return read_rows(path, **options)


@EXAMPLES
@given(TEXTS, st.booleans())
def test_jsonl_gives_back_every_text_exactly(texts: list[str], ascii_only: bool) -> None:
    lines = "".join(json.dumps({"id": i, "text": t}, ensure_ascii=ascii_only) + "\n" for i, t in enumerate(texts))
    table = read_written(".jsonl", lambda p: p.write_text(lines, encoding="utf-8"))
    assert [row["text"] for row in table.rows] == texts


@EXAMPLES
@given(TEXTS)
def test_csv_gives_back_every_text_exactly(texts: list[str]) -> None:
    def write(path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["id", "text"], *[[i, t] for i, t in enumerate(texts)]])

    assert [row["text"] for row in read_written(".csv", write).rows] == texts


@EXAMPLES
@given(st.binary(), st.sampled_from([".jsonl", ".csv"]), st.booleans())
def test_any_bytes_are_rows_or_one_bad_input(data: bytes, suffix: str, skip: bool) -> None:
    try:
        table = read_written(suffix, lambda p: p.write_bytes(data), label_column="label", skip_bad_rows=skip)
    except BadInput as err:
        assert "rows" in str(err).split(":")[0] and "\n" not in str(err), "one line that names the file"
    else:
        assert table.rows and len(table.rows) == len(table.lines)


@EXAMPLES
@given(st.lists(st.one_of(st.text(), st.builds(json.dumps, st.dictionaries(st.text(), st.text()))), max_size=8))
def test_skipping_accounts_for_every_line(lines: list[str]) -> None:
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    try:
        table = read_written(".jsonl", lambda p: p.write_text("\n".join(lines), encoding="utf-8"), skip_bad_rows=True)
    except BadInput:
        return
    assert len(table.rows) + len(table.skipped) == sum(1 for line in lines if line.strip())
