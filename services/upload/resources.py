"""HTTP resources of the upload service."""

from __future__ import annotations

import falcon

from services import upload
from services.gateway.accepted import start_task
from services.gateway.problems import Problem
from services.upload.csv_format import BadHeader, read_header
from shared import storage
from shared import tasks as t

# Allowance for the multipart envelope around the file when checking Content-Length up front.
MULTIPART_OVERHEAD = 64 * 1024


class _PrefixedStream:
    """A stream that first yields bytes already read from another stream, then the rest of it."""

    def __init__(self, head: bytes, rest) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._rest.read(size)


class UploadResource:
    def __init__(self, db, broker, settings) -> None:
        self.db = db
        self.broker = broker
        self.settings = settings

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
          operationId: uploadFile
          tags: [upload]
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
        if req.content_length is not None and req.content_length > limit + MULTIPART_OVERHEAD:
            raise self._too_large()
        try:
            form = req.get_media()
            for part in form:
                if part.name == "file":
                    task = self._store(req.context.caller, part)
                    break
            else:
                raise Problem(falcon.HTTP_400, "the multipart body has no field named 'file'", parameter="file")
        except storage.FileTooLarge:
            raise self._too_large() from None
        except falcon.MediaMalformedError as exc:
            raise Problem(falcon.HTTP_400, f"the multipart body could not be parsed: {exc.description}") from None
        start_task(resp, self.db, self.broker, task)

    def _store(self, caller, part) -> t.Task:
        """Stream the file into storage and create its task, in one transaction: all or nothing."""
        head = part.stream.read(storage.CHUNK_BYTES)
        try:
            read_header(head)
        except BadHeader as exc:
            raise Problem(falcon.HTTP_422, f"the file cannot be imported: {exc}", title="Bad CSV Header") from None
        with self.db.transaction() as cur:
            # The client's name for the file, made safe (no path, no NUL: PostgreSQL text cannot hold one).
            filename = part.secure_filename if part.filename else None
            file_id = storage.create_file(cur, organization_id=caller.organization_id, purpose="upload",
                                          filename=filename)
            size = storage.write_stream(cur, file_id, _PrefixedStream(head, part.stream),
                                        self.settings.max_upload_bytes)
            task = t.create_task(
                cur, organization_id=caller.organization_id, kind=upload.KIND, queue_name=upload.QUEUE,
                actor_name=upload.ACTOR, progress_unit="bytes", actor=caller.actor,
                params={"file_id": str(file_id), "filename": filename, "size_bytes": size},
            )
            storage.attach_to_task(cur, file_id, task.id)
        return task
