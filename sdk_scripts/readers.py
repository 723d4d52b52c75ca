"""Records out of CSV, JSONL and JSON files, streamed, each with where it came from; bad input named precisely.

A reader yields `Record`s: a line number and either the row as a dict or the reason it could not be read
(a malformed JSONL line is one rejected record, not the end of the import). Problems with the whole file
(missing, unknown format, wrong encoding) raise `InputError` before anything is imported.
"""

from __future__ import annotations

import codecs
import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("csv", "jsonl", "json")
_CHUNK = 1 << 20


class InputError(ValueError):
    """The file as a whole cannot be read; the message says what to do."""


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line (CSV: the row's first line; JSON: the item's index + 1)
    row: dict[str, Any] | None
    error: str | None = None


def detect_format(path: Path, declared: str | None = None) -> str:
    if declared:
        if declared not in FORMATS:
            raise InputError(f"unknown format {declared!r}: use one of {', '.join(FORMATS)}")
        return declared
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in FORMATS:
        return suffix
    raise InputError(f"{path}: cannot tell the format from the name; pass --format {'|'.join(FORMATS)}")


def check_encoding(path: Path, encoding: str) -> None:
    """Decode the whole file once, in chunks, before importing any of it: a wrong encoding found half-way
    would leave half a file imported."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError as exc:
        raise InputError(f"unknown encoding {encoding!r}") from exc
    line, offset = 1, 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                at = offset + exc.start
                line += chunk[: exc.start].count(b"\n")
                raise InputError(
                    f"{path} is not {encoding}: byte 0x{chunk[exc.start]:02x} at offset {at} (line {line}) cannot "
                    f"be decoded. Pass --encoding with the file's encoding (often cp1252 or latin-1 for "
                    f"spreadsheet exports); nothing was imported."
                ) from exc
            line += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not {encoding}: it ends inside a character; nothing was imported") from exc


def open_records(path: Path, fmt: str, encoding: str = "utf-8-sig") -> tuple[list[str] | None, Iterator[Record]]:
    """(CSV header or None, the records). Raises InputError for a missing or unreadable file."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    check_encoding(path, encoding)
    if fmt == "csv":
        return _csv(path, encoding)
    if fmt == "jsonl":
        return None, _jsonl(path, encoding)
    return None, _json(path, encoding)


def _csv(path: Path, encoding: str) -> tuple[list[str], Iterator[Record]]:
    csv.field_size_limit(sys.maxsize)  # long texts are judged by the importer's length rule, with a reason
    handle = path.open(newline="", encoding=encoding)
    reader = csv.DictReader(handle)
    header = [name.strip() for name in reader.fieldnames or []]
    if not header:
        handle.close()
        raise InputError(f"{path}: the CSV file is empty (no header row)")
    reader.fieldnames = header

    def rows() -> Iterator[Record]:
        with handle:
            line = reader.line_num + 1
            try:
                for row in reader:
                    if None in row:
                        yield Record(line, None, f"{len(row[None]) + len(header)} fields, the header has {len(header)}")
                    else:
                        yield Record(line, {k: v for k, v in row.items() if k})
                    line = reader.line_num + 1
            except csv.Error as exc:
                yield Record(line, None, f"unreadable CSV: {exc}; the rest of the file was not read")

    return header, rows()


def _jsonl(path: Path, encoding: str) -> Iterator[Record]:
    with path.open(encoding=encoding) as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Record(number, None, f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            yield _as_record(number, value)


def _json(path: Path, encoding: str) -> Iterator[Record]:
    """One JSON document is parsed whole, here and now: a syntax error stops the import before it starts."""
    with path.open(encoding=encoding) as handle:
        try:
            value = json.load(handle)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; nothing was imported"
            ) from exc
    items = value if isinstance(value, list) else [value]
    return (_as_record(number, item) for number, item in enumerate(items, 1))


def _as_record(number: int, value: Any) -> Record:
    if not isinstance(value, dict):
        return Record(number, None, f"expected an object, found {type(value).__name__}")
    # LS's own task format nests the fields under "data"
    data = value.get("data") if isinstance(value.get("data"), dict) else value
    return Record(number, dict(data))
