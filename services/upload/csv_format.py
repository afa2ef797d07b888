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
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# The csv module's own field limit (131072 characters) would make a long field a parse error; the byte limits
# of CsvStream (max_record_bytes, max_field_bytes) bound what is held instead.
csv.field_size_limit(2**31 - 1)


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
    UTF-8 byte-order mark) takes. Raises BadHeader, also for a NUL anywhere in the header row."""
    if not first_bytes.strip():
        raise BadHeader("the file is empty")
    stream = CsvStream(io.BytesIO(first_bytes[: MAX_HEADER_BYTES + 1]), offset=0, line=0)
    record = next(stream.records(), None)
    if record is None:
        raise BadHeader("the file is empty")
    _, row = record
    if isinstance(row, str):
        if b"\x00" in first_bytes[:4096]:
            raise BadHeader("the file is not CSV text (it contains NUL bytes)")
        raise BadHeader(f"the header row is {row.removeprefix('not ')}: the file is not UTF-8 CSV"
                        if "UTF-8" in row else f"the header row is not valid CSV: {row}")
    if stream.offset > MAX_HEADER_BYTES:
        raise BadHeader("the header row is longer than 1 MiB")
    if any("\x00" in name for name in row):
        raise BadHeader("the header row holds a NUL character, which PostgreSQL text cannot store: the file is "
                        "not CSV text")
    return Header.parse(row), stream.offset


# How much of the stream is decoded and parsed at a time. Below the default MAX_FIELD_BYTES (1 MiB), so that
# a block can hold an over-long field only when it was grown to hold a long record: the other blocks' rows
# skip the per-row field-length check (about a tenth of the parsing time).
BLOCK_BYTES = 256 * 1024


class CsvStream:
    """CSV records from a binary stream, with the exact byte offset and line number after each record,
    so that a checkpoint can name the place to continue from.

    The stream is decoded a block at a time (cut after its last newline) and parsed by the C csv reader
    straight from the decoded text; the byte offset is worked out only when asked for (once a batch).
    A record whose quoted field runs past the end of a block is parsed again with more of the stream.

    Memory stays bounded by `max_record_bytes`: a record longer than that is never held whole; it is
    skipped (its end found by counting quotes, as RFC 4180 quoting works) and reported as a bad record.
    A record with a field over `max_field_bytes` bytes, or a NUL character (which PostgreSQL text cannot
    store), is reported as a bad record too."""

    def __init__(self, binary, offset: int, line: int, block_size: int = BLOCK_BYTES,
                 max_record_bytes: int | None = None, max_field_bytes: int | None = None,
                 column_names: tuple[str, ...] | list[str] = ()) -> None:
        self._binary = binary
        self._column_names = tuple(column_names)  # to name a column in a reason
        self._block_size = block_size
        self._max_record_bytes = max_record_bytes
        self._max_field_bytes = max_field_bytes
        self._block_offset = offset  # byte offset where the current block's text starts
        self._block_line = line  # lines before the current block
        self._text = ""
        self._text_io: io.StringIO | None = None
        self._reader = None
        self._unread = b""
        self._at_start = offset == 0
        self._has_bad_bytes = False
        self._has_nul = False
        self._may_hold_big_field = False
        self._may_hold_long_record = False
        self._final = False
        self._skipped: tuple[int, str] | None = None

    @property
    def offset(self) -> int:
        if self._text_io is None:
            return self._block_offset
        consumed = self._text[: self._text_io.tell()]
        return self._block_offset + len(consumed.encode("utf-8", "surrogateescape"))

    @property
    def line(self) -> int:
        return self._block_line + (self._reader.line_num if self._reader is not None else 0)

    def _read(self) -> bytes:
        more = self._binary.read(self._block_size)
        if not more:
            self._final = True
        return more

    def _next_block(self, carried: bytes = b"") -> bool:
        """Load the next block (after `carried`, the bytes of an unfinished record); False at the end.

        The block starts at a record boundary. When the record there is longer than max_record_bytes, it
        is skipped instead (see _skip_record) and the block starts after it."""
        data = carried + self._unread
        self._unread = b""
        if self._at_start and not self._final:
            while len(data) < 3 and not self._final:
                data += self._read()
            self._at_start = False
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
                self._block_offset += 3
        limit = self._max_record_bytes
        # A carried record is read on with at least as many bytes again, so that a long record is parsed
        # a logarithmic, not a linear, number of times.
        wanted = len(carried) - (len(data) - len(carried))
        newline_read = b"\n" in data[len(carried):]
        while not self._final:
            if limit is not None and not newline_read and len(data) > limit:
                # The record that starts the block has not ended within `limit` bytes: too long to hold.
                return self._skip_record(data)
            more = self._read()
            data += more
            wanted -= len(more)
            newline_read = newline_read or b"\n" in more
            if newline_read and wanted <= 0:
                break
        if not self._final:
            cut = data.rfind(b"\n") + 1
            data, self._unread = data[:cut], data[cut:]
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
        self._has_nul = "\x00" in self._text
        # No field of a block shorter than the field limit can be over it: the check is skipped there.
        self._may_hold_big_field = self._max_field_bytes is not None and len(data) > self._max_field_bytes
        self._may_hold_long_record = limit is not None and len(data) > limit
        self._text_io = io.StringIO(self._text)
        self._reader = csv.reader(self._text_io, strict=True)
        return True

    def _skip_record(self, head: bytes) -> bool:
        """Skip the over-long record that starts the block (`head`: its first bytes), note it as bad, and
        load the block after it."""
        start_line = self._block_line + 1
        in_quotes = head.count(b'"') % 2 == 1
        newlines = head.count(b"\n")
        size = len(head)
        while True:
            block = self._read()
            if not block:
                end = None
                break
            end, in_quotes = _record_end(block, in_quotes)
            if end is not None:
                newlines += block.count(b"\n", 0, end) + 1
                size += end + 1
                self._unread = block[end + 1:]
                break
            newlines += block.count(b"\n")
            size += len(block)
        self._block_offset += size
        self._block_line += newlines
        self._skipped = (start_line, f"the row is longer than {self._max_record_bytes} bytes (UPLOAD_BATCH_BYTES)")
        return self._next_block()

    def _advance_block(self) -> bool:
        self._block_offset = self.offset
        self._block_line = self.line
        return self._next_block()

    def _bad_field(self, row: list[str], start: int, end: int) -> str | None:
        """Why the record (`row`, parsed from the block's text[start:end]) cannot be stored as it is, or None."""
        limit = self._max_record_bytes
        if (self._may_hold_long_record and (end - start) * 4 > limit
                and len(self._text[start:end].encode("utf-8", "surrogateescape")) > limit):
            return f"the row is longer than {limit} bytes (UPLOAD_BATCH_BYTES)"
        if self._has_nul:
            for position, value in enumerate(row, start=1):
                if "\x00" in value:
                    return f"{self._column(position)} holds a NUL character, which PostgreSQL text cannot store"
        if self._may_hold_big_field:
            limit = self._max_field_bytes
            # A character is at most 4 bytes: shorter values need no encoding to be measured.
            if max(map(len, row), default=0) * 4 > limit:
                for position, value in enumerate(row, start=1):
                    if len(value) * 4 > limit and len(value.encode("utf-8", "surrogateescape")) > limit:
                        return f"{self._column(position)} is longer than {limit} bytes (MAX_FIELD_BYTES)"
        return None

    def _column(self, position: int) -> str:
        if position <= len(self._column_names):
            return f"column {position} ({self._column_names[position - 1]})"
        return f"column {position}"

    def records(self) -> Iterator[tuple[int, list[str] | str]]:
        """(first line number, fields) per record; fields is an error message for an unreadable record."""
        if self._reader is None and not self._next_block() and self._skipped is None:
            return
        while True:
            if self._skipped is not None:
                skipped, self._skipped = self._skipped, None
                yield skipped
                if self._reader is None:
                    return
            reader, block_line = self._reader, self._block_line
            for_bad_bytes = self._has_bad_bytes
            check = self._has_nul or self._may_hold_big_field or self._may_hold_long_record
            while True:
                start = block_line + reader.line_num + 1
                before = self._text_io.tell() if check else 0
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
                reason = self._bad_field(row, before, self._text_io.tell()) if check else None
                yield start, (row if reason is None else reason)
            if self._reader is reader and not self._advance_block() and self._skipped is None:
                return
            if self._reader is None and self._skipped is None:
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
_QUOTE_OR_NEWLINE = re.compile(b'["\\n]')


def _record_end(block: bytes, in_quotes: bool) -> tuple[int | None, bool]:
    """The position of the newline that ends a record in `block` (None if it goes on), and whether the
    block ends inside quotes, given whether it starts inside them. Quotes toggle, so an escaped quote
    (two of them) leaves the state as it was."""
    position = 0
    while True:
        if in_quotes:
            quote = block.find(b'"', position)
            if quote < 0:
                return None, True
            in_quotes, position = False, quote + 1
        else:
            found = _QUOTE_OR_NEWLINE.search(block, position)
            if found is None:
                return None, False
            if block[found.start()] == 0x0A:
                return found.start(), False
            in_quotes, position = True, found.end()


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


def submitted_at_for_copy(value: str) -> tuple[str, datetime] | None:
    """The submitted_at text for COPY and the instant it names, or None when `value` is not ISO-8601: what
    parse_submitted_at and timestamp_for_copy give, in one look at the plain forms nearly every file uses."""
    if _PLAIN_TIMESTAMP.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return value, (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
    moment = parse_submitted_at(value)
    return None if moment is None else (timestamp_for_copy(value, moment), moment)
