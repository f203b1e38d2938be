"""The user's own files (JSON Lines or CSV) read row by row, with errors that name the file and line."""

import codecs
import csv
import gzip
import io
import json
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune import FinetuneError, first_line
from lm_eval_tasks.tweet_sentiment.utils import LABELS


class BadInput(FinetuneError):
    """A file that cannot be used as it is; the message names the file and line."""


class BadRow(ValueError):
    """One unusable row; the reader adds the file and line, and stops or counts it as the user asked."""


logger = logging.getLogger(__name__)
# Text may be long (a whole document in one cell): the model truncates, the reader must not refuse.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Table:
    """The usable rows of a user's file, the line each starts on, and every row left out with why."""

    path: Path
    rows: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    below_min_confidence: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "rows": len(self.rows),
            "skipped": len(self.skipped),
            "below_min_confidence": self.below_min_confidence,
            "skipped_rows": self.skipped,
        }


def read_text(path: Path) -> str:
    """The file as text: UTF-8 with or without a byte order mark, gzip-compressed or not; anything else is named,
    with its line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: a folder, not a .jsonl or .csv file") from None
    except OSError as err:  # a link loop, no permission, ...
        raise BadInput(f"{path}: cannot read it ({err.strerror})") from None
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise BadInput(f"{path}: gzip-compressed, but not readable as gzip ({first_line(err)})") from None
    if data.startswith(UTF16_BOMS):
        raise BadInput(f"{path}:1: UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise BadInput(f"{path}:{line}: not UTF-8 (byte 0x{data[err.start]:02x}); save the file as UTF-8") from None
    if not text.strip():
        raise BadInput(f"{path}: the file is empty")
    return text


def jsonl_records(text: str) -> Iterator[tuple[int, dict | BadRow]]:
    """Each non-blank line as a JSON object; lines split on newline only, since JSON strings may hold U+2028."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "\\u" in line:  # an escape is the one way past UTF-8 decoding for half a surrogate pair
                json.dumps(row, ensure_ascii=False).encode()
        except json.JSONDecodeError as err:
            yield number, BadRow(f"not valid JSON ({err.msg})")
            continue
        except UnicodeEncodeError as err:  # `\ud83d` alone: half of a surrogate pair, as a cut emoji leaves it
            yield number, BadRow(f"holds {err.object[err.start]!r}, half of a UTF-16 surrogate pair, which is no text")
            continue
        yield number, row if isinstance(row, dict) else BadRow(f"expected a JSON object, got {type(row).__name__}")


def csv_records(path: Path, text: str, text_column: str) -> Iterator[tuple[int, dict | BadRow]]:
    """Each CSV record under the header's names, numbered by the line it starts on. Strict: a stray quote would
    otherwise open a field that swallows the rest of the file as one row."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:  # a row would keep only the last of the same-named fields
            raise BadInput(f"{path}:{reader.line_num}: the CSV header names {', '.join(repeated)} more than once")
        if text_column not in header:
            raise BadInput(
                f"{path}:{reader.line_num}: the CSV header has no `{text_column}` column "
                f"(it has: {', '.join(header) or 'nothing'})"
            )
        start = reader.line_num + 1
        for fields in reader:
            number, start = start, reader.line_num + 1
            if not fields:
                continue
            if len(fields) != len(header):
                yield number, BadRow(f"{len(fields)} fields where the header has {len(header)}")
            else:
                yield number, dict(zip(header, fields))
    except csv.Error as err:
        raise BadInput(f"{path}:{reader.line_num}: not readable as CSV ({err})") from None


def label_index(value: Any) -> int:
    """A label as the word (any case) or its index into the task's label set."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in LABELS:
            return LABELS.index(word)
        if word.isascii() and word.isdigit():
            value = int(word)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(LABELS):
        return value
    raise BadRow(f"label {value!r} is not one of {', '.join(LABELS)} (or 0-{len(LABELS) - 1})")


def confidence(row: dict) -> float:
    """A finite number: NaN compares false with any threshold and would pass every one."""
    try:
        value = math.nan if isinstance(row["confidence"], bool) else float(row["confidence"])
    except (KeyError, TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise BadRow(f"no number in `confidence` (got {row.get('confidence')!r})")
    return value


def check_row(row: dict, text_column: str, label_column: str | None) -> dict:
    """The row as the task's docs are (`text`, and `label` as an index) if it is usable, else BadRow."""
    text = row.get(text_column)
    if text is None:
        raise BadRow(f"no `{text_column}`" if text_column not in row else f"`{text_column}` is null")
    if not isinstance(text, str):
        raise BadRow(f"`{text_column}` is not a string (got {text!r})")
    if not text.strip():
        raise BadRow(f"`{text_column}` is empty" if not text else f"`{text_column}` is only whitespace")
    doc = {**row, "text": text}
    if label_column is not None:
        if label_column not in row:
            raise BadRow(f"no `{label_column}`")
        doc["label"] = label_index(row[label_column])
        doc["label_text"] = LABELS[doc["label"]]
    return doc


def read_rows(
    path: Path,
    text_column: str = "text",
    label_column: str | None = None,
    min_confidence: float | None = None,
    skip_bad_rows: bool = False,
) -> Table:
    """The rows of a JSON Lines or CSV file, checked one by one: a bad row stops the read with its file and
    line, or, with `skip_bad_rows`, is left out and counted. Read by hand, since datasets' loaders name no line."""
    path = Path(path)
    kind = Path(path.name.removesuffix(".gz")).suffix.lower()  # data.jsonl.gz is data.jsonl, compressed
    if kind not in (".jsonl", ".csv"):
        raise BadInput(f"{path}: expected a .jsonl or .csv file (or either gzip-compressed, .gz)")
    text = read_text(path)
    records = csv_records(path, text, text_column) if kind == ".csv" else jsonl_records(text)
    table, first_line_of_id = Table(path), {}
    for number, record in records:
        try:
            if isinstance(record, BadRow):
                raise record
            doc = check_row(record, text_column, label_column)
            key = doc.get("id")
            if key not in (None, "") and str(key) in first_line_of_id:
                raise BadRow(f"duplicate id {key!r} (first on line {first_line_of_id[str(key)]})")
            if key not in (None, ""):  # a row below --min_confidence holds its id too
                first_line_of_id[str(key)] = number
            if min_confidence is not None and confidence(record) < min_confidence:
                table.below_min_confidence += 1
                continue
        except BadRow as err:
            if not skip_bad_rows:
                raise BadInput(f"{path}:{number}: {err}") from None
            table.skipped.append(f"{path}:{number}: {err}")
            continue
        table.rows.append(doc)
        table.lines.append(number)
    if not table.rows:
        raise BadInput(no_rows_message(table))
    if table.skipped:
        logger.warning("skipped %d bad row(s) of %s; first: %s", len(table.skipped), path, table.skipped[0])
    return table


def drop_too_long(table: Table, lengths: list[int], limit: int, skip_bad_rows: bool) -> None:
    """Rows longer than the model takes lose their answer in training (trl cuts the end) or their instruction in
    scoring (lm-eval cuts the start): each is an error with its line, or, with `skip_bad_rows`, left out and counted.
    `lengths` are the rows' token counts with the prompt and answer, in the table's order."""
    too_long = [
        f"{table.path}:{line}: {length} tokens with the prompt and answer, more than the {limit} the model takes"
        for line, length in zip(table.lines, lengths)
        if length > limit
    ]
    if too_long and not skip_bad_rows:
        raise BadInput(too_long[0])
    if too_long:
        kept = [i for i, length in enumerate(lengths) if length <= limit]
        table.rows, table.lines = [table.rows[i] for i in kept], [table.lines[i] for i in kept]
        table.skipped += too_long
        logger.warning("skipped %d row(s) of %s longer than %d tokens", len(too_long), table.path, limit)
        if not table.rows:
            raise BadInput(no_rows_message(table))


def no_rows_message(table: Table) -> str:
    reasons = [f"{len(table.skipped)} bad, first: {table.skipped[0]}"] if table.skipped else []
    if table.below_min_confidence:
        reasons.append(f"{table.below_min_confidence} below --min_confidence")
    if not reasons:
        return f"{table.path}: the file has a header but no rows"
    return f"{table.path}: no usable rows ({'; '.join(reasons)})"
