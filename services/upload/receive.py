"""Receiving an upload's request body whole or not at all: its length, its Content-Digest, its end.

A multipart body proves it is complete only by its closing boundary; the byte count proves it against
Content-Length; a Content-Digest (RFC 9530) proves it against what the client sent. `store_upload` stores
the file and creates its task in a transaction that commits only after all three have been checked.
"""

from __future__ import annotations

import hashlib
import uuid

import falcon
import http_sf

from services import upload
from services.gateway.problems import Problem
from services.upload.csv_format import BadHeader, read_header
from shared import storage
from shared import tasks as t

# RFC 9530 algorithms we verify (both "Active" in the IANA registry), by their hashlib names.
DIGEST_ALGORITHMS = {"sha-256": "sha256", "sha-512": "sha512"}
_READ_BYTES = 64 * 1024


class BodyIncomplete(Exception):
    """The request body ended, or could not be read, before it was whole."""


def content_digests(header: str | None) -> dict[str, bytes]:
    """The digests of a Content-Digest header, {hashlib name: digest}; empty when there is none.

    Raises Problem (400) when the header is not a structured-field dictionary of byte sequences, or names
    none of the algorithms in DIGEST_ALGORITHMS."""
    if header is None:
        return {}
    try:
        members = http_sf.parse(header.encode("latin-1"), tltype="dictionary")
    except (http_sf.StructuredFieldError, UnicodeEncodeError, ValueError) as exc:
        raise _bad_digest(f"Content-Digest is not a valid structured-field dictionary ({exc})") from None
    digests = {}
    for name, (value, _) in members.items():
        if name not in DIGEST_ALGORITHMS:
            continue  # RFC 9530 section 2: a recipient may ignore algorithms it does not support
        algorithm = DIGEST_ALGORITHMS[name]
        if not isinstance(value, bytes) or len(value) != hashlib.new(algorithm).digest_size:
            raise _bad_digest(f"Content-Digest {name} must be a byte sequence (:base64:) of the digest")
        digests[algorithm] = value
    if not digests:
        raise _bad_digest(f"Content-Digest names none of the supported algorithms ({', '.join(DIGEST_ALGORITHMS)})")
    return digests


def _bad_digest(detail: str) -> Problem:
    return Problem(falcon.HTTP_400, detail, title="Bad Content-Digest", header="Content-Digest")


class RequestBody:
    """The request content as the server hands it over (chunked transfer coding already removed):
    counted, hashed for the Content-Digest, and capped at `limit` bytes.

    `read` raises BodyIncomplete when the server cannot deliver the body (client gone, broken chunked
    coding, a read timeout) and `too_large()` when it grows past `limit`."""

    def __init__(self, raw, *, content_length: int | None, limit: int, digests: dict[str, bytes],
                 too_large) -> None:
        self._raw = raw
        self._content_length = content_length
        self._limit = limit
        self._digests = digests
        self._hashes = [(algorithm, hashlib.new(algorithm)) for algorithm in digests]
        self._too_large = too_large
        self.received = 0
        self._eof = False

    @property
    def ended(self) -> bool:
        """Whether the whole body has been read (Content-Length reached, or the server's end of input)."""
        return self._eof or (self._content_length is not None and self.received >= self._content_length)

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._raw.read(size)
        except (falcon.HTTPError, TimeoutError):
            # A stall (the gateway worker's BODY_STALL_SECONDS read timeout) is answered by the gateway's
            # own handler, which names the setting; the transaction rolls back on the way out all the same.
            raise
        except Exception as exc:  # the server's own error for a broken body (NoMoreData, reset ...)
            raise BodyIncomplete(f"the request body could not be read to its end ({type(exc).__name__}: "
                                 f"{exc})") from exc
        if not data:
            self._eof = True
            return data
        self.received += len(data)
        if self.received > self._limit:
            raise self._too_large()
        for _, running in self._hashes:
            running.update(data)
        return data

    def finish(self, stream) -> None:
        """Read what follows the closing boundary (the multipart epilogue, ignored) through `stream`, then
        check the byte count against Content-Length and the digests against Content-Digest.

        Raises BodyIncomplete, or Problem (400) on a digest mismatch."""
        while stream.read(_READ_BYTES):
            pass
        if self._content_length is not None and self.received != self._content_length:
            raise BodyIncomplete(f"the request body ended after {self.received} of the {self._content_length} "
                                 "bytes its Content-Length announced")
        for algorithm, running in self._hashes:
            if running.digest() != self._digests[algorithm]:
                name = next(name for name, value in DIGEST_ALGORITHMS.items() if value == algorithm)
                raise Problem(falcon.HTTP_400, f"the request content does not match its Content-Digest {name}: "
                              "nothing was stored", title="Content-Digest Mismatch", header="Content-Digest")


def store_upload(db, caller, form, body: RequestBody, stream, max_upload_bytes: int) -> t.Task:
    """Stream the file part of `form` (parsed from `stream`, which reads `body`) into storage and create its
    task, in one transaction that commits only once the whole body has arrived: its closing boundary, its
    length and its digest checked. Raises Problem (400, 422), BodyIncomplete, storage.FileTooLarge or the
    parser's MediaMalformedError; nothing is stored then."""
    stored = None
    with db.transaction() as cur:
        for part in form:
            if part.name != "file" and not part.filename:
                continue  # another form field: ignored (the parser skips what is left unread)
            if stored is not None or part.name != "file":
                raise Problem(falcon.HTTP_400, "the multipart body has more than one file part: send one file, "
                              "in the field 'file'", parameter="file")
            stored = _store_file(cur, caller, part, max_upload_bytes)
        if stored is None:
            raise Problem(falcon.HTTP_400, "the multipart body has no field named 'file'", parameter="file")
        body.finish(stream)
        file_id, params = stored
        task = t.create_task(
            cur, organization_id=caller.organization_id, kind=upload.KIND, queue_name=upload.QUEUE,
            actor_name=upload.ACTOR, progress_unit="bytes", actor=caller.actor, params=params,
        )
        storage.attach_to_task(cur, file_id, task.id)
    return task


def _store_file(cur, caller, part, max_upload_bytes: int) -> tuple[uuid.UUID, dict]:
    """Check the file's header row, then copy the part into storage; returns its id and the task params
    (file id, name, size, SHA-256 of its bytes)."""
    head = part.stream.read(storage.CHUNK_BYTES)
    try:
        read_header(head)
    except BadHeader as exc:
        raise Problem(falcon.HTTP_422, f"the file cannot be imported: {exc}", title="Bad CSV Header") from None
    # The client's name for the file, made safe (no path, no NUL: PostgreSQL text cannot hold one).
    filename = part.secure_filename if part.filename else None
    file_id = storage.create_file(cur, organization_id=caller.organization_id, purpose="upload",
                                  filename=filename)
    content = _HashedStream(head, part.stream)
    size = storage.write_stream(cur, file_id, content, max_upload_bytes)
    return file_id, {"file_id": str(file_id), "filename": filename, "size_bytes": size,
                     "sha256": content.sha256.hexdigest()}


class _HashedStream:
    """A stream that first yields bytes already read from another stream, then the rest of it, and keeps
    the SHA-256 of all it yielded."""

    def __init__(self, head: bytes, rest) -> None:
        self._head = head
        self._rest = rest
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        if self._head:
            size = len(self._head) if size < 0 else size
            out, self._head = self._head[:size], self._head[size:]
        else:
            out = self._rest.read(size)
        self.sha256.update(out)
        return out
