"""The upload CSV format: a header row naming response_id, form_id, submitted_at and the questions."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

REQUIRED_COLUMNS = ("response_id", "form_id", "submitted_at")
MAX_HEADER_BYTES = 1024 * 1024
MAX_FIELD_CHARS = 16 * 1024 * 1024
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

csv.field_size_limit(MAX_FIELD_CHARS)


class BadHeader(ValueError):
    """The file cannot be imported at all: empty, not UTF-8 CSV, or missing a required column."""


@dataclass(frozen=True)
class Header:
    columns: tuple[str, ...]
    response_id: int
    form_id: int
    submitted_at: int
    questions: tuple[tuple[int, str], ...]

    @classmethod
    def parse(cls, columns: list[str]) -> Header:
        names = [name.strip() for name in columns]
        if not any(names):
            raise BadHeader("the header row is empty")
        for position, name in enumerate(names, start=1):
            if not name:
                raise BadHeader(f"column {position} of the header has no name")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise BadHeader(f"the header names these columns more than once: {', '.join(duplicates)}")
        missing = [name for name in REQUIRED_COLUMNS if name not in names]
        if missing:
            raise BadHeader(
                f"the header lacks required column(s) {', '.join(missing)}; "
                f"required: {', '.join(REQUIRED_COLUMNS)}"
            )
        index = {name: i for i, name in enumerate(names)}
        questions = tuple((i, name) for i, name in enumerate(names) if name not in REQUIRED_COLUMNS)
        return cls(tuple(names), index["response_id"], index["form_id"], index["submitted_at"], questions)


def read_header(first_bytes: bytes) -> tuple[Header, int]:
    """Parse the header record from the start of a file; returns it and the byte length it (and a
    UTF-8 byte-order mark) takes. Raises BadHeader."""
    if not first_bytes.strip():
        raise BadHeader("the file is empty")
    if b"\x00" in first_bytes[:4096]:
        raise BadHeader("the file is not CSV text (it contains NUL bytes)")
    stream = CsvStream(io.BytesIO(first_bytes[: MAX_HEADER_BYTES + 1]), offset=0, line=0)
    try:
        record = next(stream.records(), None)
    except UnicodeDecodeError:
        raise BadHeader("the file is not UTF-8 encoded CSV") from None
    if record is None:
        raise BadHeader("the file is empty")
    _, row = record
    if isinstance(row, str):
        raise BadHeader(f"the header row is not valid CSV: {row}")
    if stream.offset > MAX_HEADER_BYTES:
        raise BadHeader("the header row is longer than 1 MiB")
    return Header.parse(row), stream.offset


class CsvStream:
    """CSV records from a binary stream, with the exact byte offset and line number after each record,
    so that a checkpoint can name the place to continue from."""

    def __init__(self, binary, offset: int, line: int) -> None:
        self._binary = binary
        self.offset = offset
        self.line = line
        self._bad_lines: set[int] = set()
        self._first = offset == 0

    def _lines(self) -> Iterator[str]:
        readline = self._binary.readline
        while True:
            raw = readline()
            if not raw:
                return
            if self._first:
                self._first = False
                if raw.startswith(b"\xef\xbb\xbf"):
                    self.offset += 3
                    raw = raw[3:]
            self.offset += len(raw)
            self.line += 1
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                if self.line == 1:
                    raise
                self._bad_lines.add(self.line)
                yield raw.decode("utf-8", errors="replace")

    def records(self) -> Iterator[tuple[int, list[str] | str]]:
        """(first line number, fields) per record; fields is an error message for an unreadable record."""
        lines = self._lines()
        reader = csv.reader(lines, strict=True)
        while True:
            start = self.line + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, f"not valid CSV ({exc})"
                continue
            if self._bad_lines and any(n in self._bad_lines for n in range(start, self.line + 1)):
                yield start, "not valid UTF-8 text"
                continue
            yield start, row


def parse_response_id(value: str) -> str | None:
    """The canonical UUID text, or None when `value` is not a UUID."""
    if _UUID.fullmatch(value):
        return value.lower()
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def parse_submitted_at(value: str) -> datetime | None:
    """An aware datetime (no offset means UTC), or None when `value` is not ISO-8601."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment
