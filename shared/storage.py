"""File storage in PostgreSQL, reachable from every gateway and worker machine.

A file is a row in stored_files plus 1 MiB chunks in stored_file_chunks. Writes happen in the caller's
transaction, so an upload is stored whole or not at all, and an export's bytes commit with its checkpoint.
"""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Iterator

from psycopg2 import sql

CHUNK_BYTES = 1024 * 1024


class FileTooLarge(Exception):
    """The file grew past the allowed size."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"file is larger than the {limit}-byte limit")
        self.limit = limit


def create_file(cur, *, organization_id, purpose: str, filename: str | None, task_id=None) -> uuid.UUID:
    file_id = uuid.uuid4()
    cur.execute(
        "INSERT INTO stored_files (id, organization_id, task_id, purpose, filename) VALUES (%s, %s, %s, %s, %s)",
        (file_id, organization_id, task_id, purpose, filename),
    )
    return file_id


def attach_to_task(cur, file_id: uuid.UUID, task_id: uuid.UUID) -> None:
    cur.execute("UPDATE stored_files SET task_id = %s WHERE id = %s", (task_id, file_id))


def write_stream(cur, file_id: uuid.UUID, stream, limit: int | None = None) -> int:
    """Copy a readable byte stream into the file, chunk by chunk; returns its size.

    One COPY carries every chunk, so PostgreSQL stores a chunk while the next is being read (the stream is
    typically a request body still arriving). Raises FileTooLarge as soon as more than `limit` bytes have been
    read; whatever the stream raises is raised here too, with the chunks copied so far left to the caller's
    transaction to roll back."""
    rows = _ChunkRows(file_id, stream, limit)
    cur.copy_expert(_COPY_CHUNK, rows, size=CHUNK_BYTES)
    if rows.error is not None:
        raise rows.error
    cur.execute("UPDATE stored_files SET size_bytes = %s WHERE id = %s", (rows.size, file_id))
    return rows.size


class _ChunkRows:
    """The stream as binary COPY data of stored_file_chunks, a chunk a read. psycopg2 turns an exception
    raised by read() into a generic QueryCanceled, so one is kept (the data ends there) and re-raised by the
    caller once the COPY is over."""

    def __init__(self, file_id: uuid.UUID, stream, limit: int | None) -> None:
        self._file_id, self._stream, self._limit = file_id, stream, limit
        self._seq = 0
        self._pending = _PGCOPY_HEADER
        self.size = 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if self._pending is None:
            return b""
        try:
            chunk = _read_full(self._stream, CHUNK_BYTES)
            self.size += len(chunk)
            if self._limit is not None and self.size > self._limit:
                raise FileTooLarge(self._limit)
        except BaseException as exc:  # noqa: BLE001 - kept whole (even an interrupt) and re-raised by the caller
            self.error, chunk = exc, b""
        if chunk:
            # Binary COPY tuple: field count, then each field as length + bytes (uuid, int4, bytea).
            out = b"".join((self._pending, struct.pack("!hi", 3, 16), self._file_id.bytes,
                            struct.pack("!iii", 4, self._seq, len(chunk)), chunk))
            self._seq += 1
            self._pending = b""
        else:
            out, self._pending = self._pending + _PGCOPY_TRAILER, None
        return out


def _read_full(stream, size: int) -> bytes:
    parts = []
    remaining = size
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


# append() sends its bytes with a binary COPY into this staging table, then moves them into place with
# SQL: as a bind parameter, bytea travels hex-encoded and is parsed back, which costs three times as much.
# The staging copy is stored uncompressed (STORAGE EXTERNAL): the chunks compress it once, on insert.
_CREATE_APPEND_STAGING = """
DO $$
BEGIN
    IF to_regclass('pg_temp.file_append_staging') IS NULL THEN
        CREATE TEMP TABLE file_append_staging (
            seq integer NOT NULL, extends_chunk boolean NOT NULL, data bytea NOT NULL
        ) ON COMMIT DELETE ROWS;
        ALTER TABLE file_append_staging ALTER COLUMN data SET STORAGE EXTERNAL;
    END IF;
END
$$
"""
_COPY_APPEND_STAGING = "COPY file_append_staging (seq, extends_chunk, data) FROM STDIN WITH (FORMAT binary)"
_EXTEND_LAST_CHUNK = """
UPDATE stored_file_chunks c SET data = c.data || s.data FROM file_append_staging s
WHERE c.file_id = %s AND c.seq = s.seq AND s.extends_chunk
"""
_INSERT_NEW_CHUNKS = """
INSERT INTO stored_file_chunks (file_id, seq, data)
SELECT %s, seq, data FROM file_append_staging WHERE NOT extends_chunk ORDER BY seq
"""
_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_PGCOPY_TRAILER = struct.pack("!h", -1)


_COPY_CHUNK = "COPY stored_file_chunks (file_id, seq, data) FROM STDIN WITH (FORMAT binary)"


def append(cur, file_id: uuid.UUID, data: bytes, size_before: int) -> int:
    """Append bytes to a file whose current size is `size_before`; returns the new size.

    The last chunk is extended and new chunks added so that a file always consists of CHUNK_BYTES-sized
    chunks (and a shorter last one)."""
    if not data:
        return size_before
    rows = io.BytesIO()
    rows.write(_PGCOPY_HEADER)
    offset = size_before
    view = memoryview(data)
    while view:
        seq, within = divmod(offset, CHUNK_BYTES)
        piece = view[: CHUNK_BYTES - within]
        # Binary COPY tuple: field count, then each field as length + bytes (int4, bool, bytea).
        rows.write(struct.pack("!hiiib", 3, 4, seq, 1, within > 0))
        rows.write(struct.pack("!i", len(piece)))
        rows.write(piece)
        offset += len(piece)
        view = view[len(piece):]
    rows.write(_PGCOPY_TRAILER)
    rows.seek(0)
    cur.execute(_CREATE_APPEND_STAGING)
    cur.execute("DELETE FROM file_append_staging")
    cur.copy_expert(_COPY_APPEND_STAGING, rows)
    cur.execute(_EXTEND_LAST_CHUNK, (file_id,))
    cur.execute(_INSERT_NEW_CHUNKS, (file_id,))
    cur.execute("UPDATE stored_files SET size_bytes = %s WHERE id = %s", (offset, file_id))
    return offset


def truncate(cur, file_id: uuid.UUID, size: int) -> None:
    """Cut the file back to `size` bytes (undoing appends that a checkpoint does not cover)."""
    seq, within = divmod(size, CHUNK_BYTES)
    cur.execute("DELETE FROM stored_file_chunks WHERE file_id = %s AND seq > %s", (file_id, seq))
    if within:
        cur.execute(
            "UPDATE stored_file_chunks SET data = substring(data FROM 1 FOR %s) WHERE file_id = %s AND seq = %s",
            (within, file_id, seq),
        )
    else:
        cur.execute("DELETE FROM stored_file_chunks WHERE file_id = %s AND seq = %s", (file_id, seq))
    cur.execute("UPDATE stored_files SET size_bytes = %s WHERE id = %s", (size, file_id))


def file_info(cur, file_id: uuid.UUID) -> dict | None:
    cur.execute("SELECT * FROM stored_files WHERE id = %s", (file_id,))
    return cur.fetchone()


def delete_task_files(cur, task_id: uuid.UUID) -> int:
    cur.execute("DELETE FROM stored_files WHERE task_id = %s", (task_id,))
    return cur.rowcount


def task_file(cur, task_id: uuid.UUID, purpose: str) -> dict | None:
    """The task's stored file of that purpose (id, filename, size_bytes), or None when there is none (yet,
    or any more)."""
    cur.execute("SELECT id, filename, size_bytes FROM stored_files WHERE task_id = %s AND purpose = %s",
                (task_id, purpose))
    return cur.fetchone()


# Chunks go with their file (ON DELETE CASCADE); the task row stays, so its download can answer 410 Gone.
_DELETE_FILES_OF_TASKS_FINISHED_BEFORE = """
DELETE FROM stored_files f USING tasks t
WHERE f.task_id = t.id AND f.purpose = %(purpose)s
  AND t.kind = %(kind)s AND t.state = %(state)s
  AND t.finished_at < now() - make_interval(hours => %(hours)s)
RETURNING f.task_id
"""


def delete_files_of_finished_tasks(cur, *, purpose: str, kind: str, state: str, hours: int) -> list[uuid.UUID]:
    """Delete the files of that purpose of the `kind` tasks that reached `state` (a final one) more than
    `hours` ago; returns those tasks' ids."""
    cur.execute(_DELETE_FILES_OF_TASKS_FINISHED_BEFORE, {"purpose": purpose, "kind": kind, "state": str(state),
                                                         "hours": hours})
    return [row["task_id"] for row in cur.fetchall()]


def delete_file(cur, file_id: uuid.UUID) -> None:
    cur.execute("DELETE FROM stored_files WHERE id = %s", (file_id,))


def first_chunk(cur, file_id: uuid.UUID) -> bytes:
    """The file's first chunk (empty when it has none), read in the caller's transaction."""
    cur.execute("SELECT data FROM stored_file_chunks WHERE file_id = %s AND seq = 0", (file_id,))
    row = cur.fetchone()
    return b"" if row is None else bytes(row["data"])


def iter_chunks(db, file_id: uuid.UUID, offset: int = 0) -> Iterator[bytes]:
    """The file's bytes from `offset`, one chunk per short transaction (no transaction is held between
    chunks, so a slow reader blocks nothing)."""
    seq, within = divmod(offset, CHUNK_BYTES)
    while True:
        with db.transaction() as cur:
            data = _chunk(cur, file_id, seq)
        if data is None:
            return
        if within:
            data = data[within:]
            within = 0
        if data:
            yield data
        seq += 1


# A chunk is read with a binary COPY: a SELECT's bytea comes hex-encoded, which costs the server and the
# reader three times the CPU (and the upload's reader thread a tenth of its time).
_COPY_CHUNK_OUT = "COPY (SELECT data FROM stored_file_chunks WHERE file_id = {} AND seq = {}) TO STDOUT (FORMAT binary)"
_FIELD_COUNT, _FIELD_SIZE = struct.Struct("!h"), struct.Struct("!i")


def _chunk(cur, file_id: uuid.UUID, seq: int) -> bytes | None:
    """Chunk `seq` of the file, or None when it has none."""
    out = io.BytesIO()
    cur.copy_expert(sql.SQL(_COPY_CHUNK_OUT).format(sql.Literal(str(file_id)), sql.Literal(seq)), out)
    view = out.getbuffer()
    if bytes(view[:len(_PGCOPY_HEADER)]) != _PGCOPY_HEADER:
        raise ValueError("unexpected COPY header reading a stored file chunk")
    position = len(_PGCOPY_HEADER)
    if _FIELD_COUNT.unpack_from(view, position)[0] == -1:  # the trailer straight after the header: no chunk
        return None
    size = _FIELD_SIZE.unpack_from(view, position + _FIELD_COUNT.size)[0]
    start = position + _FIELD_COUNT.size + _FIELD_SIZE.size
    data = bytes(view[start:start + size])
    view.release()
    return data


class ChunkReader(io.RawIOBase):
    """A raw binary stream over a stored file from a byte offset, for io.BufferedReader."""

    def __init__(self, db, file_id: uuid.UUID, offset: int = 0) -> None:
        self._chunks = iter_chunks(db, file_id, offset)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._pending:
            self._pending = memoryview(next(self._chunks, b""))
            if not self._pending:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
