"""The upload CSV format: a header row naming response_id, form_id, submitted_at and the questions."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

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
    record = next(stream.records(), None)
    if record is None:
        raise BadHeader("the file is empty")
    _, row = record
    if isinstance(row, str):
        raise BadHeader(f"the header row is {row.removeprefix('not ')}: the file is not UTF-8 CSV"
                        if "UTF-8" in row else f"the header row is not valid CSV: {row}")
    if stream.offset > MAX_HEADER_BYTES:
        raise BadHeader("the header row is longer than 1 MiB")
    return Header.parse(row), stream.offset


class CsvStream:
    """CSV records from a binary stream, with the exact byte offset and line number after each record,
    so that a checkpoint can name the place to continue from.

    The stream is decoded a block at a time (cut after its last newline) and parsed by the C csv reader
    straight from the decoded text; the byte offset is worked out only when asked for (once a batch).
    A record whose quoted field runs past the end of a block is parsed again with the next block."""

    def __init__(self, binary, offset: int, line: int, block_size: int = 1024 * 1024) -> None:
        self._binary = binary
        self._block_size = block_size
        self._block_offset = offset  # byte offset where the current block's text starts
        self._block_line = line  # lines before the current block
        self._text = ""
        self._text_io: io.StringIO | None = None
        self._reader = None
        self._unread = b""
        self._at_start = offset == 0
        self._has_bad_bytes = False
        self._final = False

    @property
    def offset(self) -> int:
        if self._text_io is None:
            return self._block_offset
        consumed = self._text[: self._text_io.tell()]
        return self._block_offset + len(consumed.encode("utf-8", "surrogateescape"))

    @property
    def line(self) -> int:
        return self._block_line + (self._reader.line_num if self._reader is not None else 0)

    def _next_block(self, carried: bytes = b"") -> bool:
        """Load the next block (after `carried`, the bytes of an unfinished record); False at the end."""
        data = carried + self._unread
        self._unread = b""
        while not self._final:
            more = self._binary.read(self._block_size)
            if not more:
                self._final = True
                break
            data += more
            if b"\n" in more:
                break
        if not self._final:
            cut = data.rfind(b"\n") + 1
            data, self._unread = data[:cut], data[cut:]
        if self._at_start:
            self._at_start = False
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
                self._block_offset += 3
        if not data:
            self._text, self._text_io, self._reader = "", None, None
            return False
        try:
            self._text = data.decode("utf-8")
            self._has_bad_bytes = False
        except UnicodeDecodeError:
            # Kept byte for byte (surrogateescape) so offsets stay exact; records with such bytes are rejected.
            self._text = data.decode("utf-8", "surrogateescape")
            self._has_bad_bytes = True
        self._text_io = io.StringIO(self._text)
        self._reader = csv.reader(self._text_io, strict=True)
        return True

    def _advance_block(self) -> bool:
        self._block_offset = self.offset
        self._block_line = self.line
        return self._next_block()

    def records(self) -> Iterator[tuple[int, list[str] | str]]:
        """(first line number, fields) per record; fields is an error message for an unreadable record."""
        if self._reader is None and not self._next_block():
            return
        while True:
            reader, block_line = self._reader, self._block_line
            for_bad_bytes = self._has_bad_bytes
            while True:
                start = block_line + reader.line_num + 1
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    if not self._final and self._text_io.tell() >= len(self._text):
                        # The record goes on in the next block: parse it again from its start.
                        self._carry_from(start)
                        break
                    yield start, f"not valid CSV ({exc})"
                    continue
                if for_bad_bytes and _SURROGATES.search("".join(row)):
                    yield start, "not valid UTF-8 text"
                    continue
                yield start, row
            if self._reader is reader and not self._advance_block():
                return
            if self._reader is None:
                return

    def _carry_from(self, start_line: int) -> None:
        """Start the next block at the record that begins on `start_line` of this one."""
        position = 0
        for _ in range(start_line - 1 - self._block_line):
            position = self._text.index("\n", position) + 1
        carried = self._text[position:].encode("utf-8", "surrogateescape")
        self._block_offset += len(self._text[:position].encode("utf-8", "surrogateescape"))
        self._block_line = start_line - 1
        self._text_io, self._reader = None, None
        self._next_block(carried)


_SURROGATES = re.compile("[\udc80-\udcff]")


def parse_response_id(value: str) -> str | None:
    """The canonical UUID text, or None when `value` is not a UUID."""
    if _UUID.fullmatch(value):
        return value.lower()
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


# Forms of ISO-8601 that PostgreSQL reads exactly as Python does: passed to COPY as they are.
_PLAIN_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?"
)


def timestamp_for_copy(value: str, parsed: datetime) -> str:
    """The submitted_at text for COPY (read by PostgreSQL with TimeZone UTC, as naive times are UTC)."""
    value = value.strip()
    return value if _PLAIN_TIMESTAMP.fullmatch(value) else parsed.isoformat()


def parse_submitted_at(value: str) -> datetime | None:
    """An aware datetime (no offset means UTC), or None when `value` is not ISO-8601."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
