"""The request-throughput baseline of scripts/bench: a minimal Falcon app that answers each request with
one indexed primary-key SELECT of a task, from the same connection pool the gateway uses. scripts/bench runs
it under the gateway's own gunicorn settings (services.cli.gunicorn_command); its req/s is the limit that
`GET /api/tasks/{id}/` is compared with."""

from __future__ import annotations

import falcon

from shared.config import Settings
from shared.db import Database

_settings = Settings.from_env()
_db = Database(_settings.database_url, maxconn=_settings.db_pool_size)


class TaskRow:
    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        with _db.transaction() as cur:
            cur.execute("SELECT id, state, progress_done FROM tasks WHERE id = %s", (task_id,))
            row = cur.fetchone()
        if row is None:
            raise falcon.HTTPNotFound()
        resp.media = {"task_id": str(row["id"]), "state": row["state"], "done": row["progress_done"]}


app = falcon.App()
app.add_route("/tasks/{task_id}", TaskRow())
