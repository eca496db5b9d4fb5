"""Reading import files as streams of records: NDJSON, CSV and JSON arrays.

Each reader takes an iterator of byte chunks and yields Record(position, data, error), holding
at most one record in memory; a record that cannot be read comes with its error, a fault after
which nothing can be read raises FileUnreadable.

# Documented in docs/jobs.md ("Import").
"""

import codecs
import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from messages.validation import MESSAGE_FIELDS

FORMATS = ("ndjson", "csv", "json")
_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass(frozen=True, slots=True)
class Record:
    position: int
    data: Any = None
    error: str | None = None


class FileUnreadable(Exception):
    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"{reason} (at {position})")
        self.position = position
        self.reason = reason


def format_sniff(head: bytes) -> str:
    """Guess the format from the first bytes: an array, an object per line, or CSV."""
    stripped = head.removeprefix(_BOM).lstrip()
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "ndjson"
    return "csv"


def records_read(chunks: Iterable[bytes], file_format: str, max_record_bytes: int) -> Iterator[Record]:
    readers = {"ndjson": _ndjson_records, "csv": _csv_records, "json": _json_array_records}
    return readers[file_format](_without_bom(chunks), max_record_bytes)


def _without_bom(chunks: Iterable[bytes]) -> Iterator[bytes]:
    iterator = iter(chunks)
    head = b""
    for chunk in iterator:
        head += chunk
        if len(head) >= 3:
            break
    if head.startswith(_UTF16_BOMS):
        raise FileUnreadable(1, "The file is UTF-16; send UTF-8.")
    yield head.removeprefix(_BOM)
    yield from iterator


def _lines(chunks: Iterable[bytes], max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line without its ending), or None for a line longer than max_bytes, whose
    bytes are skipped as they arrive rather than collected."""
    number = 0
    pending = b""
    overlong = False
    for chunk in chunks:
        data = pending + chunk
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            number += 1
            line = data[start:end]
            yield number, None if overlong or len(line) > max_bytes + 1 else line.removesuffix(b"\r")
            overlong = False
            start = end + 1
        pending = data[start:]
        if len(pending) > max_bytes + 1:
            overlong = True
            pending = b""
    if pending or overlong:
        yield number + 1, None if overlong else pending.removesuffix(b"\r")


def _too_long(max_bytes: int) -> str:
    return f"The line is longer than {max_bytes} bytes."


def _ndjson_records(chunks: Iterable[bytes], max_bytes: int) -> Iterator[Record]:
    for number, line in _lines(chunks, max_bytes):
        if line is None:
            yield Record(number, error=_too_long(max_bytes))
            continue
        if not line.strip():
            continue
        try:
            yield Record(number, json.loads(line.decode("utf-8")))
        except UnicodeDecodeError:
            yield Record(number, error="The line is not valid UTF-8.")
        except (ValueError, RecursionError):
            yield Record(number, error="The line is not valid JSON.")


def _csv_records(chunks: Iterable[bytes], max_bytes: int) -> Iterator[Record]:
    """CSV with a header row naming at least the four message columns (any order, any case).

    Lines are decoded with surrogateescape so that one line that is not UTF-8 becomes one
    rejected record instead of stopping the csv module.
    """
    overlong: set[int] = set()
    line_number = 0

    def text_lines() -> Iterator[str]:
        nonlocal line_number
        for number, line in _lines(chunks, max_bytes):
            line_number = number
            if line is None:
                overlong.add(number)
                yield "\n"
            else:
                yield line.decode("utf-8", "surrogateescape") + "\n"

    reader = csv.reader(text_lines(), strict=True)
    columns: list[str] = []
    previous_end = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            if not columns:
                raise FileUnreadable(1, "The CSV file has no header row.") from None
            return
        except csv.Error as exc:
            yield Record(previous_end + 1, error=f"The CSV record is malformed: {exc}.")
            previous_end = line_number
            continue
        start, previous_end = previous_end + 1, line_number
        if start in overlong:
            yield Record(start, error=_too_long(max_bytes))
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if any(_not_utf8(value) for value in row):
            yield Record(start, error="The line is not valid UTF-8.")
            continue
        if not columns:
            columns = [name.strip().lower() for name in row]
            missing = [name for name in MESSAGE_FIELDS if name not in columns]
            if missing:
                raise FileUnreadable(start, f"The CSV header lacks the column(s): {', '.join(missing)}.")
            continue
        if len(row) != len(columns):
            yield Record(start, error=f"Expected {len(columns)} columns, found {len(row)}.")
            continue
        yield Record(start, dict(zip(columns, row, strict=True)))


def _not_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_WHITESPACE = frozenset(" \t\r\n")


def _json_array_records(chunks: Iterable[bytes], max_bytes: int) -> Iterator[Record]:
    """Elements of a top-level JSON array, decoded one at a time with raw_decode.

    The buffer is read by position and compacted once per chunk, so the cost stays linear in
    the file size however many elements a chunk holds.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("strict")
    iterator = iter(chunks)
    text = ""
    pos = 0
    index = 0
    expect = "["  # then "first"/"value", then "separator" after each value, then "end"

    def more() -> bool:
        nonlocal text, pos
        for chunk in iterator:
            try:
                decoded = utf8.decode(chunk)
            except UnicodeDecodeError:
                raise FileUnreadable(index, "The file is not valid UTF-8 here; nothing after it was read.") from None
            text, pos = text[pos:] + decoded, 0
            if chunk:
                return True
        return False

    while True:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos == len(text):
            if more():
                continue
            if expect == "end":
                return
            raise FileUnreadable(index, "The JSON array ends too early; nothing after it was read.")
        char = text[pos]
        if expect == "[":
            if char != "[":
                raise FileUnreadable(0, "A JSON file must hold one array of message objects.")
            pos, expect = pos + 1, "first"
        elif expect in ("first", "value"):
            if expect == "first" and char == "]":
                pos, expect = pos + 1, "end"
                continue
            try:
                value, end = decoder.raw_decode(text, pos)
            except (ValueError, RecursionError):
                if len(text) - pos > max_bytes:
                    raise FileUnreadable(
                        index, f"An element is malformed or longer than {max_bytes} bytes; nothing after it was read."
                    ) from None
                if more():
                    continue
                raise FileUnreadable(
                    index, "The JSON array is malformed or ends too early here; nothing after it was read."
                ) from None
            if end == len(text) and more():
                continue  # a number or literal may go on in the next chunk: decode it whole
            yield Record(index, value)
            index += 1
            pos, expect = end, "separator"
        elif expect == "separator":
            if char not in ",]":
                raise FileUnreadable(index, "Expected , or ] between array elements; nothing after it was read.")
            pos, expect = pos + 1, "value" if char == "," else "end"
        else:
            raise FileUnreadable(index, "There is data after the JSON array's closing ]; it was not read.")
