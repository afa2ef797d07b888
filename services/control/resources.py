"""HTTP resources of the control service: pause, resume, revoke, and reading tasks."""

from __future__ import annotations

import falcon

from services.control.commands import TaskControl
from services.gateway.problems import Problem
from shared import tasks as t
from shared.tasks import TaskState

MAX_WAIT_SECONDS = 30
PAGE_SIZE_MAX = 200


def task_not_found(task_id) -> Problem:
    return Problem(falcon.HTTP_404, f"no task {task_id} in your organization", title="Task Not Found")


def conflict(refused: t.TransitionRefused) -> Problem:
    return Problem(falcon.HTTP_409, str(refused), title="Invalid Task Transition",
                   state=refused.state, task_id=str(refused.task_id))


def wait_seconds(req: falcon.Request) -> float:
    raw = req.get_param("wait")
    if raw is None:
        return 0
    try:
        value = float(raw)
    except ValueError:
        raise Problem(falcon.HTTP_400, f"wait must be a number of seconds (0 to {MAX_WAIT_SECONDS}), got {raw!r}",
                      parameter="wait") from None
    if not 0 <= value <= MAX_WAIT_SECONDS:
        raise Problem(falcon.HTTP_400, f"wait must be between 0 and {MAX_WAIT_SECONDS} seconds, got {raw}",
                      parameter="wait")
    return value


class _ControlResource:
    """POST /api/{action}/{task_id}/ — answers 200 when the task reached its target state, 202 when
    a worker still has to act."""

    settled: TaskState
    transient: TaskState

    def __init__(self, control: TaskControl) -> None:
        self.control = control

    def command(self, caller, task_id):
        raise NotImplementedError

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id) -> None:
        caller = req.context.caller
        wait = wait_seconds(req)
        try:
            task = self.command(caller, task_id)
        except t.TaskNotFound:
            raise task_not_found(task_id) from None
        except t.TransitionRefused as refused:
            raise conflict(refused) from None
        if task.state is self.transient and wait:
            task = self.control.wait_for_change(caller.organization_id, task_id, self.transient, wait)
        resp.media = task.to_json()
        resp.status = falcon.HTTP_200 if task.state is not self.transient else falcon.HTTP_202
        resp.set_header("Location", f"/api/tasks/{task_id}/")


class PauseResource(_ControlResource):
    transient = TaskState.PAUSING

    def command(self, caller, task_id):
        return self.control.pause(caller.organization_id, task_id, caller.actor)


class ResumeResource(_ControlResource):
    # Resuming re-queues the task: the worker picks it up from there.
    transient = TaskState.QUEUED

    def command(self, caller, task_id):
        return self.control.resume(caller.organization_id, task_id, caller.actor)

    def on_post(self, req, resp, task_id) -> None:
        super().on_post(req, resp, task_id)
        resp.status = falcon.HTTP_202


class RevokeResource(_ControlResource):
    transient = TaskState.REVOKING

    def command(self, caller, task_id):
        return self.control.revoke(caller.organization_id, task_id, caller.actor, reason="user")


class TaskResource:
    def __init__(self, db) -> None:
        self.db = db

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id) -> None:
        try:
            with self.db.transaction() as cur:
                task = t.get_task(cur, task_id, req.context.caller.organization_id)
                events = t.task_events(cur, task_id) if req.get_param_as_bool("events") else None
        except t.TaskNotFound:
            raise task_not_found(task_id) from None
        body = task.to_json()
        if events is not None:
            body["events"] = [{**e, "at": e["at"].isoformat()} for e in events]
        resp.media = body


class TaskListResource:
    def __init__(self, db, kinds: tuple[str, ...]) -> None:
        self.db = db
        self.kinds = kinds

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        unknown = sorted(set(req.params) - {"state", "kind", "limit", "offset"})
        if unknown:
            raise Problem(falcon.HTTP_400, f"unknown query parameter(s): {', '.join(unknown)}", parameter=unknown[0])
        states = req.get_param_as_list("state")
        kinds = req.get_param_as_list("kind")
        for name, values, allowed in (("state", states, [s.value for s in TaskState]), ("kind", kinds, self.kinds)):
            bad = [v for v in values or [] if v not in allowed]
            if bad:
                raise Problem(falcon.HTTP_400, f"{name} must be one of {', '.join(allowed)}; got {', '.join(bad)}",
                              parameter=name)
        limit = req.get_param_as_int("limit", min_value=1, max_value=PAGE_SIZE_MAX, default=50)
        offset = req.get_param_as_int("offset", min_value=0, default=0)
        with self.db.transaction() as cur:
            found, total = t.list_tasks(cur, req.context.caller.organization_id, states=states, kinds=kinds,
                                        limit=limit, offset=offset)
        body = {"tasks": [task.to_json() for task in found], "total": total, "limit": limit, "offset": offset}
        if offset + len(found) < total:
            body["next"] = f"/api/tasks/?{_query(req, offset + limit)}"
        resp.media = body


def _query(req: falcon.Request, offset: int) -> str:
    from urllib.parse import urlencode

    params = {k: v for k, v in req.params.items() if k != "offset"}
    params["offset"] = offset
    return urlencode(params, doseq=True)
