"""HTTP resources of the export service: start an export, download its file."""

from __future__ import annotations

import falcon

from services.export.exports import ExportNotCompleted, Exports, NotAnExport
from services.export.params import InvalidParameter, parse_export_query
from services.http.accepted import answer_accepted
from services.http.problems import Problem
from services.http.task_problems import task_not_found
from shared import tasks as t


class ExportResource:
    """POST (or GET, as the original API had it) /api/export/?from_date=...&to_date=...[&form_id=...]"""

    def __init__(self, exports: Exports) -> None:
        self.exports = exports

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
        answer_accepted(resp, self.exports.start(caller.organization_id, caller.requested_by, wanted))

    on_get = on_post


class DownloadResource:
    """GET /api/tasks/{task_id}/download: the finished export's CSV file, streamed from storage."""

    def __init__(self, exports: Exports, settings) -> None:
        self.exports = exports
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
        try:
            stored = self.exports.file(req.context.caller.organization_id, task_id)
        except t.TaskNotFound:
            raise task_not_found(task_id) from None
        except NotAnExport as exc:
            raise Problem(falcon.HTTP_404, str(exc), title="No Download") from None
        except ExportNotCompleted as exc:
            raise Problem(falcon.HTTP_409, str(exc), title="Export Not Completed", state=exc.state,
                          task_id=str(exc.task_id)) from None
        if stored is None:
            hours = self.settings.export_retention_hours
            raise Problem(falcon.HTTP_410, f"the export's file was deleted: files are kept {hours} hours "
                                           "(EXPORT_RETENTION_HOURS) after the export completes; start a new "
                                           "export", title="Gone")
        resp.content_type = "text/csv; charset=utf-8"
        resp.downloadable_as = stored["filename"] or f"export-{task_id}.csv"
        resp.content_length = stored["size_bytes"]
        resp.stream = self.exports.file_chunks(stored["id"])
