"""Receiving an upload's request body whole or not at all: its length, its Content-Digest, its end.

A multipart body proves it is complete only by its closing boundary; the byte count proves it against
Content-Length; a Content-Digest (RFC 9530) proves it against what the client sent. The upload resource
stores the file in a transaction that commits only after `RequestBody.finish` has checked all three.
"""

from __future__ import annotations

import hashlib

import falcon
import http_sf

from services.gateway.problems import Problem

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
        except falcon.HTTPError:
            raise
        except Exception as exc:  # the server's own error for a broken body (NoMoreData, timeout, reset ...)
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
