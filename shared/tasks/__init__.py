"""The task core: states, the task record, the transitions and a worker's lease.

`shared.task_states` (outside the package, so that the client and the metrics can import it alone) spells
the states; `model` is the record and its API JSON; `transitions` is the table
of every guarded change and `apply`; `leases` is a worker's claim and checkpoint; `waiting` wakes a request
that waits for a task to change. Call sites use the names re-exported here (`from shared import tasks as t`).
"""

from shared.task_states import (
    LEASED_STATES,
    MESSAGE_STATES,
    STOPPING_STATES,
    TERMINAL_STATES,
    WORKER_STATES,
    WORKING_STATES,
    TaskState,
)
from shared.tasks.leases import (
    MESSAGE_LOST_SQL,
    claim,
    expired_failures,
    expired_pauses,
    hold_of,
    mark_enqueued,
    mark_message_lost,
    renew_lease,
    save_progress,
    stalled_tasks,
)
from shared.tasks.model import (
    TASK_JSON_SCHEMA,
    Task,
    TaskNotFound,
    create_task,
    get_task,
    list_tasks,
    record_event,
    task_events,
)
from shared.tasks.transitions import (
    CANCEL_PAUSE,
    CHANGES_CHANNEL,
    COMPLETE,
    CONFIRM_PAUSE,
    CONFIRM_REVOKE,
    EXPIRE_FAILURE,
    EXPIRE_PAUSE,
    FAIL,
    PAUSE_QUEUED,
    REQUEST_PAUSE,
    REQUEST_REVOKE,
    RESUME_FAILED,
    RESUME_PAUSED,
    REVOKE_UNSTARTED,
    START,
    TAKE_OVER,
    Transition,
    TransitionRefused,
    apply,
)
from shared.tasks.waiting import SAFETY_POLL_SECONDS, wait_for_change

__all__ = [
    "CANCEL_PAUSE", "CHANGES_CHANNEL", "COMPLETE", "CONFIRM_PAUSE", "CONFIRM_REVOKE", "EXPIRE_FAILURE", "EXPIRE_PAUSE",
    "FAIL", "LEASED_STATES", "MESSAGE_LOST_SQL", "MESSAGE_STATES", "PAUSE_QUEUED", "REQUEST_PAUSE", "REQUEST_REVOKE",
    "RESUME_FAILED", "RESUME_PAUSED", "REVOKE_UNSTARTED", "START", "STOPPING_STATES", "TAKE_OVER", "TASK_JSON_SCHEMA",
    "TERMINAL_STATES", "WORKER_STATES", "WORKING_STATES", "Task", "TaskNotFound", "TaskState", "Transition",
    "TransitionRefused", "apply", "claim", "create_task", "expired_failures", "expired_pauses", "get_task",
    "hold_of", "list_tasks", "mark_enqueued", "mark_message_lost", "record_event", "renew_lease", "save_progress",
    "stalled_tasks", "task_events", "SAFETY_POLL_SECONDS", "wait_for_change",
]
