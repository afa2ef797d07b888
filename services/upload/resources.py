"""HTTP resources of the upload service."""

from __future__ import annotations

import falcon
import falcon.media

from services.http.accepted import start_task
from services.http.problems import Problem
from services.upload.receive import BodyIncomplete, RequestBody, content_digests, store_upload
from shared import storage

# Allowance for the multipart envelope around the file when checking Content-Length up front.
MULTIPART_OVERHEAD = 64 * 1024
# The request body is read a MiB at a time (falcon's default, 32 KiB, made gunicorn copy what it had read ahead
# on every read: a fifth of the time to store a large upload).
BODY_READ_BYTES = 1024 * 1024


class UploadResource:
    def __init__(self, db, broker, settings) -> None:
        self.db = db
        self.broker = broker
        self.settings = settings
        self._multipart = falcon.media.MultipartFormHandler()

    def _too_large(self) -> Problem:
        limit = self.settings.max_upload_bytes
        return Problem(falcon.HTTP_413, f"the file is larger than MAX_UPLOAD_BYTES ({limit} bytes)",
                       title="Payload Too Large", max_upload_bytes=limit)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Store an uploaded CSV file of form responses and queue its import as a task.

        ---
        post:
          summary: Upload a CSV file of responses
          description: >-
            The file is stored, then imported by a worker as a task that can be paused, resumed and
            revoked. Its header must have the columns `response_id`, `form_id` and `submitted_at`; the
            other columns are the answers. Rows that cannot be imported are counted in the task's result.
            The task is created only once the whole body has arrived (closing multipart boundary read,
            Content-Length matched, Content-Digest verified when sent); an incomplete body stores nothing.
            The body may be sent with chunked transfer coding. Exactly one file part.
          operationId: uploadFile
          tags: [upload]
          parameters:
            - in: header
              name: Content-Digest
              required: false
              description: >-
                RFC 9530 digest of the whole request content (the multipart body as sent, after removing
                any chunked transfer coding), e.g. `sha-256=:<base64>:`; sha-256 and sha-512 are
                verified. A mismatch or a malformed header is a 400 and nothing is stored.
              schema: {type: string}
          requestBody:
            required: true
            content:
              multipart/form-data:
                schema:
                  type: object
                  required: [file]
                  properties:
                    file: {type: string, format: binary, description: The CSV file (UTF-8).}
          responses:
            202:
              description: The file is stored and its import is queued.
              headers: {Location: {description: The task's URL., schema: {type: string}}}
              content:
                application/json:
                  schema: {$ref: '#/components/schemas/Task'}
                  examples: {queued: {$ref: '#/components/examples/TaskQueued'}}
            400: {$ref: '#/components/responses/BadRequest'}
            413: {$ref: '#/components/responses/ContentTooLarge'}
            415: {$ref: '#/components/responses/UnsupportedMediaType'}
            422: {$ref: '#/components/responses/UnprocessableContent'}
        """
        if not (req.content_type or "").lower().startswith("multipart/form-data"):
            raise Problem(falcon.HTTP_415, "send the CSV as multipart/form-data with the file in the field 'file'",
                          title="Unsupported Media Type")
        limit = self.settings.max_upload_bytes
        length = req.content_length
        if length is not None and length > limit + MULTIPART_OVERHEAD:
            raise self._too_large()
        if length is None and not req.env.get("wsgi.input_terminated"):
            # Without a length, only a server that ends the input at the body's end can be read to its end.
            raise Problem(falcon.HTTP_411, "send the body with a Content-Length or chunked transfer coding",
                          title="Length Required")
        digests = content_digests(req.get_header("Content-Digest"))
        body = RequestBody(req.bounded_stream if length is not None else req.stream, content_length=length,
                           limit=limit + MULTIPART_OVERHEAD, digests=digests, too_large=self._too_large)
        # The stream ends at Content-Length, or (chunked) one byte past the cap, which RequestBody refuses.
        stream = falcon.BufferedReader(body.read, length if length is not None else limit + MULTIPART_OVERHEAD + 1,
                                        chunk_size=BODY_READ_BYTES)
        try:
            form = self._multipart.deserialize(stream, req.content_type, length)
            task = store_upload(self.db, req.context.caller, form, body, stream, limit)
        except storage.FileTooLarge:
            raise self._too_large() from None
        except BodyIncomplete as exc:
            raise Problem(falcon.HTTP_400, f"{exc}: the upload is incomplete and nothing was stored",
                          title="Incomplete Upload") from None
        except falcon.MediaMalformedError as exc:
            if body.ended:
                raise Problem(falcon.HTTP_400, f"the request body ended after {body.received} bytes, before the "
                              "multipart closing boundary: the upload is incomplete and nothing was stored",
                              title="Incomplete Upload") from None
            raise Problem(falcon.HTTP_400, f"the multipart body could not be parsed: {exc.description}") from None
        start_task(resp, self.db, self.broker, task)
