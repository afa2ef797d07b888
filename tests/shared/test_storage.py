"""Stored files: appends keep the file whole and its chunks CHUNK_BYTES long, in one transaction."""

from __future__ import annotations

import os
import uuid

import pytest

from shared import orgs, storage
from shared.storage import CHUNK_BYTES


def _new_file(rt) -> uuid.UUID:
    with rt.db.transaction() as cur:
        organization_id = orgs.ensure_organization(cur, f"storage-{uuid.uuid4().hex[:8]}")
        return storage.create_file(cur, organization_id=organization_id, purpose="test", filename=None)


def _chunk_sizes(rt, file_id) -> list[int]:
    with rt.db.transaction() as cur:
        cur.execute("SELECT length(data) AS n FROM stored_file_chunks WHERE file_id = %s ORDER BY seq",
                    (file_id,))
        return [row["n"] for row in cur.fetchall()]


def test_appends_across_chunk_boundaries_read_back_whole(rt):
    # Given a file appended to in pieces that end inside, exactly at, and far past chunk boundaries
    file_id = _new_file(rt)
    pieces = [os.urandom(n) for n in (10, CHUNK_BYTES - 10, 700_000, 2 * CHUNK_BYTES + 5, 1, 0, 400_000)]
    size = 0
    with rt.db.transaction() as cur:
        size = storage.append(cur, file_id, pieces[0], size)  # two appends in one transaction
        size = storage.append(cur, file_id, pieces[1], size)
    for piece in pieces[2:]:
        with rt.db.transaction() as cur:
            size = storage.append(cur, file_id, piece, size)
    # Then it reads back byte for byte, from the start and from an offset, in CHUNK_BYTES chunks
    whole = b"".join(pieces)
    assert size == len(whole)
    assert b"".join(storage.iter_chunks(rt.db, file_id)) == whole
    assert b"".join(storage.iter_chunks(rt.db, file_id, CHUNK_BYTES + 123)) == whole[CHUNK_BYTES + 123:]
    sizes = _chunk_sizes(rt, file_id)
    assert sizes[:-1] == [CHUNK_BYTES] * (len(sizes) - 1) and 0 < sizes[-1] <= CHUNK_BYTES
    with rt.db.transaction() as cur:
        assert storage.file_info(cur, file_id)["size_bytes"] == len(whole)


def test_an_append_rolled_back_leaves_the_file_as_it_was(rt):
    file_id = _new_file(rt)
    with rt.db.transaction() as cur:
        storage.append(cur, file_id, b"kept", 0)
    try:
        with rt.db.transaction() as cur:
            storage.append(cur, file_id, b" and lost", 4)
            raise RuntimeError("the batch failed")
    except RuntimeError:
        pass
    assert b"".join(storage.iter_chunks(rt.db, file_id)) == b"kept"


def test_a_file_reads_back_empty_before_its_first_chunk_and_past_its_end(rt):
    file_id = _new_file(rt)
    assert list(storage.iter_chunks(rt.db, file_id)) == []
    with rt.db.transaction() as cur:
        storage.append(cur, file_id, b"\x00\xff" * 10, 0)
    assert b"".join(storage.iter_chunks(rt.db, file_id, 5)) == (b"\x00\xff" * 10)[5:]
    assert list(storage.iter_chunks(rt.db, file_id, 20)) == []
    assert list(storage.iter_chunks(rt.db, file_id, CHUNK_BYTES + 1)) == []


class _Trickle:
    """A byte stream that hands out at most `step` bytes a read (as a socket does), then raises `fail` if
    given instead of ending."""

    def __init__(self, data: bytes, step: int, fail: BaseException | None = None) -> None:
        self.data, self.step, self.fail, self.at = data, step, fail, 0

    def read(self, size: int = -1) -> bytes:
        if self.at >= len(self.data) and self.fail is not None:
            raise self.fail
        part = self.data[self.at:self.at + min(size, self.step)]
        self.at += len(part)
        return part


def test_a_streamed_file_is_stored_whole_in_chunk_bytes_chunks(rt):
    # Given a stream of 2.5 chunks that arrives 100,000 bytes a read, and an empty one
    data = os.urandom(2 * CHUNK_BYTES + CHUNK_BYTES // 2)
    file_id, empty_id = _new_file(rt), _new_file(rt)
    with rt.db.transaction() as cur:
        size = storage.write_stream(cur, file_id, _Trickle(data, 100_000), limit=len(data))
        assert storage.write_stream(cur, empty_id, _Trickle(b"", 1)) == 0
    # Then both read back exactly, the first in full chunks and a shorter last one
    assert size == len(data)
    assert b"".join(storage.iter_chunks(rt.db, file_id)) == data
    assert _chunk_sizes(rt, file_id) == [CHUNK_BYTES, CHUNK_BYTES, CHUNK_BYTES // 2]
    assert list(storage.iter_chunks(rt.db, empty_id)) == []
    with rt.db.transaction() as cur:
        assert storage.file_info(cur, file_id)["size_bytes"] == len(data)


def test_a_stream_past_the_limit_or_failing_raises_its_own_error_and_stores_nothing(rt):
    # Given a stream one byte over the limit, and one whose reader fails after two chunks (a client gone)
    data = os.urandom(2 * CHUNK_BYTES)
    for stream, expected in [(_Trickle(data + b"x", 65_536), storage.FileTooLarge),
                             (_Trickle(data, 65_536, fail=ConnectionResetError("client went away")),
                              ConnectionResetError)]:
        file_id = _new_file(rt)
        # When it is written in a transaction, the stream's own error comes out (not the COPY's), and the
        # transaction rolls back every chunk already copied
        with pytest.raises(expected), rt.db.transaction() as cur:
            storage.write_stream(cur, file_id, stream, limit=len(data))
        assert list(storage.iter_chunks(rt.db, file_id)) == []
