"""Stored files: appends keep the file whole and its chunks CHUNK_BYTES long, in one transaction."""

from __future__ import annotations

import os
import uuid

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
