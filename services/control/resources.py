"""HTTP resources of the control service: pause, resume, revoke, and reading tasks."""

from __future__ import annotations

import re

import falcon

from services.control.commands import TaskControl
from services.gateway.problems import Problem
from shared import tasks as t
from shared.tasks import TaskState

MAX_WAIT_SECONDS = 30
PAGE_SIZE_MAX = 200
# Far past any real list, and inside PostgreSQL's bigint (a larger OFFSET was a 500).
OFFSET_MAX = 2**31 - 1
# The start of a task id as it is shown (canonical form): its first 8 hex digits, then up to the whole id.
# Only hex digits and dashes, so it cannot carry a LIKE wildcard.
ID_PREFIX = re.compile(r"[0-9a-f]{8}[0-9a-f-]{0,28}", re.IGNORECASE)


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
    openapi_components = {"parameters": {"wait": {
        "name": "wait", "in": "query", "required": False,
        "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS, "default": 0},
        "description": "Seconds to wait for the worker to act before answering (0 answers at once).",
    }}}

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
    """A queued task is paused at once; a running one stops at its next batch boundary.

    ---
    post:
      summary: Pause a task
      description: >-
        A queued task is paused at once (200). A running task is asked to stop at its next batch
        boundary (202, state `pausing`; 200 once `paused` if that happens within `wait` seconds). A task
        left paused longer than the pause timeout is revoked.
      operationId: pauseTask
      tags: [control]
      parameters:
        - wait
      responses:
        200:
          description: The task is paused.
          headers: {Location: {description: The task's URL., schema: {type: string}}}
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Task'}
              examples: {paused: {$ref: '#/components/examples/TaskPaused'}}
        202:
          description: The worker will stop the task at its next batch boundary.
          headers: {Location: {description: The task's URL., schema: {type: string}}}
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Task'}
              examples: {pausing: {$ref: '#/components/examples/TaskPausing'}}
        400: {$ref: '#/components/responses/BadRequest'}
        404: {$ref: '#/components/responses/NotFound'}
        409: {$ref: '#/components/responses/Conflict'}
    """

    transient = TaskState.PAUSING

    def command(self, caller, task_id):
        return self.control.pause(caller.organization_id, task_id, caller.actor)


class ResumeResource(_ControlResource):
    """A paused or failed task is queued to continue from its checkpoint; a pausing one keeps running.

    ---
    post:
      summary: Resume a task
      description: >-
        A paused or failed task is queued to continue from its last checkpoint (state `queued`); a task
        still `pausing` simply keeps running. Always 202: a worker picks the task up.
      operationId: resumeTask
      tags: [control]
      parameters:
        - wait
      responses:
        202:
          description: The task is queued again (or keeps running).
          headers: {Location: {description: The task's URL., schema: {type: string}}}
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Task'}
              examples:
                queued: {$ref: '#/components/examples/TaskQueued'}
                running: {$ref: '#/components/examples/TaskRunning'}
        400: {$ref: '#/components/responses/BadRequest'}
        404: {$ref: '#/components/responses/NotFound'}
        409: {$ref: '#/components/responses/Conflict'}
    """

    # Resuming re-queues the task: the worker picks it up from there.
    transient = TaskState.QUEUED

    def command(self, caller, task_id):
        return self.control.resume(caller.organization_id, task_id, caller.actor)

    def on_post(self, req, resp, task_id) -> None:
        super().on_post(req, resp, task_id)
        resp.status = falcon.HTTP_202


class RevokeResource(_ControlResource):
    """Stop a task and undo its effects.

    ---
    post:
      summary: Revoke a task
      description: >-
        Stops the task (also a failed one) and rolls back everything it did. A task that never started is
        revoked at once (200); otherwise its worker rolls it back (202, state `revoking`; 200 once `revoked` if that
        happens within `wait` seconds).
      operationId: revokeTask
      tags: [control]
      parameters:
        - wait
      responses:
        200:
          description: The task is revoked and its effects are undone.
          headers: {Location: {description: The task's URL., schema: {type: string}}}
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Task'}
              examples: {revoked: {$ref: '#/components/examples/TaskRevoked'}}
        202:
          description: The task's worker is rolling it back.
          headers: {Location: {description: The task's URL., schema: {type: string}}}
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Task'}
              examples: {revoking: {$ref: '#/components/examples/TaskRevoking'}}
        400: {$ref: '#/components/responses/BadRequest'}
        404: {$ref: '#/components/responses/NotFound'}
        409: {$ref: '#/components/responses/Conflict'}
    """

    transient = TaskState.REVOKING

    def command(self, caller, task_id):
        return self.control.revoke(caller.organization_id, task_id, caller.actor, reason="user")


class TaskResource:
    def __init__(self, db) -> None:
        self.db = db

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id) -> None:
        """One task: its state, progress, rate, result or error.

        ---
        get:
          summary: Get a task
          operationId: getTask
          tags: [tasks]
          parameters:
            - name: events
              in: query
              required: false
              description: Also list the task's state changes (`events`).
              schema: {type: boolean, default: false}
          responses:
            200:
              description: The task (with `events` when asked for).
              content:
                application/json:
                  schema:
                    allOf:
                      - {$ref: '#/components/schemas/Task'}
                      - type: object
                        properties:
                          checkpoint:
                            type: [object, 'null']
                            additionalProperties: true
                            description: Where a resume continues from (its fields depend on the kind).
                          events:
                            type: array
                            items:
                              type: object
                              required: [at, from_state, to_state, actor, reason]
                              properties:
                                at: {type: string, format: date-time}
                                from_state: {type: [string, 'null']}
                                to_state: {type: string}
                                actor: {type: string}
                                reason: {type: [string, 'null']}
                  examples:
                    running: {$ref: '#/components/examples/TaskRunning'}
                    completed: {$ref: '#/components/examples/TaskCompleted'}
            400: {$ref: '#/components/responses/BadRequest'}
            404: {$ref: '#/components/responses/NotFound'}
        """
        try:
            with self.db.transaction() as cur:
                task = t.get_task(cur, task_id, req.context.caller.organization_id)
                events = t.task_events(cur, task_id) if req.get_param_as_bool("events") else None
        except t.TaskNotFound:
            raise task_not_found(task_id) from None
        body = task.to_json()
        body["checkpoint"] = task.checkpoint
        if events is not None:
            body["events"] = [{**e, "at": e["at"].isoformat()} for e in events]
        resp.media = body


class TaskListResource:
    def __init__(self, db, kinds: tuple[str, ...]) -> None:
        self.db = db
        self.kinds = kinds
        # Documents the `kind` filter with the kinds this app was composed with.
        self.openapi_components = {"parameters": {"task_kind": {
            "name": "kind", "in": "query", "required": False, "style": "form", "explode": True,
            "description": "Only tasks of these kinds (repeat the parameter, or separate with commas).",
            "schema": {"type": "array", "items": {"type": "string", "enum": list(kinds)}},
        }}}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The caller's tasks, newest first, a page at a time.

        ---
        get:
          summary: List tasks
          operationId: listTasks
          tags: [tasks]
          parameters:
            - name: state
              in: query
              required: false
              description: Only tasks in these states (repeat the parameter, or separate with commas).
              schema:
                type: array
                items: {type: string, enum: [queued, running, pausing, paused, revoking, revoked, completed,
                                             failed]}
              style: form
              explode: true
            - task_kind
            - name: id_prefix
              in: query
              required: false
              description: >-
                Only tasks whose id starts with this: at least its first 8 characters, as a command-line
                client abbreviates ids (`collect pause 3f2a9c1e`). Several matches mean the prefix is ambiguous.
              schema: {type: string, minLength: 8, maxLength: 36, pattern: '^[0-9a-fA-F]{8}[0-9a-fA-F-]{0,28}$'}
            - name: limit
              in: query
              required: false
              schema: {type: integer, minimum: 1, maximum: 200, default: 50}
            - name: offset
              in: query
              required: false
              schema: {type: integer, minimum: 0, maximum: 2147483647, default: 0}
          responses:
            200:
              description: A page of tasks; `next` is the URL of the next page, when there is one.
              content:
                application/json:
                  schema:
                    type: object
                    required: [tasks, total, limit, offset]
                    properties:
                      tasks: {type: array, items: {$ref: '#/components/schemas/Task'}}
                      total: {type: integer, minimum: 0, description: Tasks matching the filters in all.}
                      limit: {type: integer}
                      offset: {type: integer}
                      next: {type: string}
                  examples: {page: {$ref: '#/components/examples/TaskPage'}}
            400: {$ref: '#/components/responses/BadRequest'}
        """
        unknown = sorted(set(req.params) - {"state", "kind", "id_prefix", "limit", "offset"})
        if unknown:
            raise Problem(falcon.HTTP_400, f"unknown query parameter(s): {', '.join(unknown)}", parameter=unknown[0])
        states = req.get_param_as_list("state")
        kinds = req.get_param_as_list("kind")
        for name, values, allowed in (("state", states, [s.value for s in TaskState]), ("kind", kinds, self.kinds)):
            bad = [v for v in values or [] if v not in allowed]
            if bad:
                raise Problem(falcon.HTTP_400, f"{name} must be one of {', '.join(allowed)}; got {', '.join(bad)}",
                              parameter=name)
        id_prefix = req.get_param("id_prefix")
        if id_prefix is not None and not ID_PREFIX.fullmatch(id_prefix):
            raise Problem(falcon.HTTP_400, "id_prefix must be the start of a task id: its first 8 hex digits, then "
                                           f"up to 28 more hex digits or dashes; got {id_prefix!r}",
                          parameter="id_prefix")
        limit = req.get_param_as_int("limit", min_value=1, max_value=PAGE_SIZE_MAX, default=50)
        offset = req.get_param_as_int("offset", min_value=0, max_value=OFFSET_MAX, default=0)
        with self.db.transaction() as cur:
            found, total = t.list_tasks(cur, req.context.caller.organization_id, states=states, kinds=kinds,
                                        id_prefix=id_prefix and id_prefix.lower(), limit=limit, offset=offset)
        body = {"tasks": [task.to_json() for task in found], "total": total, "limit": limit, "offset": offset}
        if offset + len(found) < total:
            body["next"] = f"/api/tasks/?{_query(req, offset + limit)}"
        resp.media = body


def _query(req: falcon.Request, offset: int) -> str:
    from urllib.parse import urlencode

    params = {k: v for k, v in req.params.items() if k != "offset"}
    params["offset"] = offset
    return urlencode(params, doseq=True)
