"""HTTP resources of the export service: start an export, download its file."""

from __future__ import annotations

import falcon

from services import export
from services.control.resources import task_not_found
from services.export.exporter import exported_file
from services.export.params import InvalidParameter, parse_export_query
from services.gateway.accepted import start_task
from services.gateway.problems import Problem
from shared import storage
from shared import tasks as t
from shared.tasks import TaskState


class ExportResource:
    """POST (or GET, as the original API had it) /api/export/?from_date=...&to_date=...[&form_id=...]"""

    def __init__(self, db, broker) -> None:
        self.db = db
        self.broker = broker

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Start an export of the organization's responses submitted in a date range.

        ---
        post:
          summary: Export responses to CSV
          description: >-
            Starts an export task (pausable, resumable, revocable like any task). Dates are `YYYY-MM-DD`
            (from_date's whole day through to_date's whole day, UTC) or full ISO-8601 date-times (UTC when
            they have no offset). Columns: response_id, form_id, submitted_at, then the questions of the
            forms in the range. Cells a spreadsheet would run as a formula are prefixed with `'` (OWASP).
            When completed, the task's result has `rows`, `bytes` and the `download` link.
          operationId: startExport
          tags: [export]
          parameters: &export_parameters
            - {name: from_date, in: query, required: true,
               schema: {anyOf: [{type: string, format: date}, {type: string, format: date-time}],
                        example: '2024-01-01'},
               description: First day (YYYY-MM-DD) or first instant (ISO-8601) of the range.}
            - {name: to_date, in: query, required: true,
               schema: {anyOf: [{type: string, format: date}, {type: string, format: date-time}],
                        example: '2024-12-31'},
               description: Last day (YYYY-MM-DD, included whole) or last instant (ISO-8601) of the range.}
            - {name: form_id, in: query, required: false, schema: {type: string, minLength: 1},
               description: Export only this form's responses.}
          responses: &export_responses
            202:
              description: The export is queued.
              headers: {Location: {description: The task's URL., schema: {type: string}}}
              content:
                application/json:
                  schema: {$ref: '#/components/schemas/Task'}
                  examples: {queued: {$ref: '#/components/examples/TaskQueued'}}
            400: {$ref: '#/components/responses/BadRequest'}
        get:
          summary: Export responses to CSV (GET form of the original API)
          description: The same as POST /api/export/.
          operationId: startExportWithGet
          tags: [export]
          parameters: *export_parameters
          responses: *export_responses
        """
        caller = req.context.caller
        try:
            wanted = parse_export_query(req.params)
        except InvalidParameter as exc:
            raise Problem(falcon.HTTP_400, str(exc), parameter=exc.parameter) from None
        with self.db.transaction() as cur:
            task = t.create_task(
                cur, organization_id=caller.organization_id, kind=export.KIND, queue_name=export.QUEUE,
                actor_name=export.ACTOR, progress_unit="rows", actor=caller.actor, params=wanted.to_params(),
            )
        start_task(resp, self.db, self.broker, task)

    on_get = on_post


class DownloadResource:
    """GET /api/tasks/{task_id}/download: the finished export's CSV file, streamed from storage."""

    def __init__(self, db, settings) -> None:
        self.db = db
        self.settings = settings

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id) -> None:
        """Stream a completed export's CSV file.

        ---
        get:
          summary: Download an export's CSV file
          operationId: downloadExport
          tags: [export]
          responses:
            200:
              description: The CSV file, as an attachment.
              headers:
                Content-Disposition: {description: attachment with the file's name., schema: {type: string}}
              content:
                text/csv:
                  schema: {type: string}
                  example: "response_id,form_id,submitted_at,village\r\n"
            404: {$ref: '#/components/responses/NotFound'}
            409: {$ref: '#/components/responses/Conflict'}
            410: {$ref: '#/components/responses/Gone'}
        """
        with self.db.transaction() as cur:
            try:
                task = t.get_task(cur, task_id, req.context.caller.organization_id)
            except t.TaskNotFound:
                raise task_not_found(task_id) from None
            if task.kind != export.KIND:
                raise Problem(falcon.HTTP_404, f"task {task_id} is not an export (it is {task.kind!r}); "
                                               "only exports have a file to download", title="No Download")
            if task.state is not TaskState.COMPLETED:
                raise Problem(falcon.HTTP_409, f"the export is {task.state}: its file can be downloaded once "
                                               "it is completed", title="Export Not Completed",
                              state=str(task.state), task_id=str(task_id))
            stored = exported_file(cur, task_id)
        if stored is None:
            hours = self.settings.export_retention_hours
            raise Problem(falcon.HTTP_410, f"the export's file was deleted: files are kept {hours} hours "
                                           "(EXPORT_RETENTION_HOURS) after the export completes; start a new "
                                           "export", title="Gone")
        resp.content_type = "text/csv; charset=utf-8"
        resp.downloadable_as = stored["filename"] or f"export-{task_id}.csv"
        resp.content_length = stored["size_bytes"]
        resp.stream = storage.iter_chunks(self.db, stored["id"])
